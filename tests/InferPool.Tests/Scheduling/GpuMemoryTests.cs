using System.Collections.Concurrent;
using InferPool.Devices;
using InferPool.Diagnostics;
using InferPool.Replicas;
using InferPool.Results;
using static InferPool.Tests.PoolTestKit;

namespace InferPool.Tests.Scheduling;

/// <summary>Running out of device memory (batches halved, then a rebuild) and replicas capped by what the first one took, against a fake GPU.</summary>
public sealed class GpuMemoryTests
{
    private const long GiB = 1L << 30;

    [Fact]
    public async Task Run_OutOfMemoryOnLargeBatches_HalvesTheReplicasBatchLimitAndEveryItemSucceedsOnItsFirstAttempt()
    {
        var calls = new ConcurrentQueue<int>();
        var (monitor, events) = Watched();
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cuda:0", 1)),
            MaxBatchSize = 16,
            MaxBatchDelay = TimeSpan.FromHours(1), // batches are always full
            Monitor = monitor,
        };
        var factory = new LambdaFactory<int, int>(_ => new LambdaReplica<int, int>(batch =>
        {
            calls.Enqueue(batch.Count);
            return batch.Count > 3
                ? throw new InvalidOperationException("[ErrorCode:RuntimeException] CUDA failure 2: out of memory")
                : [.. batch.Select(x => Outcome.Success(x + 1))];
        }));

        var results = await CollectBoundedAsync(InferencePool.RunAsync(FailureTests.AsyncRange(64), factory, options));

        Assert.Equal(64, results.Count);
        Assert.All(results, r => Assert.Equal((r.Item + 1, 1), (r.Value, r.Attempts)));
        // 16 → 8 → 4 → 2: three halvings on the first batch, then every call is at most 2 items; no rebuild.
        Assert.Equal([16, 8, 4, 2], calls.Take(4));
        Assert.All(calls.Skip(3), size => Assert.True(size <= 2));
        Assert.Equal(3, events.Count(e => e.Kind == ReplicaEventKind.BatchLimitHalved));
        Assert.Contains("now takes at most 2 item(s)", events.Last(e => e.Kind == ReplicaEventKind.BatchLimitHalved).Message, StringComparison.Ordinal);
        Assert.DoesNotContain(events, e => e.Kind == ReplicaEventKind.Faulted);
    }

    [Fact]
    public async Task Run_OneItemDoesNotFitAlone_RebuildsTheReplicaAndFailsThatItemAfterMaxAttempts()
    {
        var builds = 0;
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cuda:0", 1)),
            MaxBatchSize = 4,
            MaxBatchDelay = TimeSpan.FromHours(1),
            MaxAttempts = 3,
            RestartBackoff = TimeSpan.Zero,
        };
        var factory = new LambdaFactory<int, int>(_ =>
        {
            Interlocked.Increment(ref builds);
            return new LambdaReplica<int, int>(batch => batch.Contains(5)
                ? throw new InvalidOperationException("CUDA out of memory. Tried to allocate 2.00 GiB")
                : [.. batch.Select(Outcome.Success)]);
        });

        var results = await CollectBoundedAsync(InferencePool.RunAsync(FailureTests.AsyncRange(12), factory, options));

        var failed = Assert.Single(results, r => !r.IsSuccess);
        Assert.Equal((5, 3), (failed.Item, failed.Attempts));
        Assert.Contains("out of memory", failed.Error!.Message, StringComparison.Ordinal);
        Assert.Equal(11, results.Count(r => r.IsSuccess));
        Assert.Equal(1 + 3, builds);
    }

    [Fact]
    public async Task Run_WithGpuTelemetry_CapsReplicasSoTheHeadroomStaysFree()
    {
        // 10 GiB card; each replica takes 3 GiB. After the first: 7 GiB free, 1 GiB kept → room for 2 more.
        var gpu = new FakeGpu(10 * GiB);
        var built = new ConcurrentQueue<string>();
        var (monitor, events) = Watched();
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cuda:0", 4)),
            MaxBatchSize = 2,
            GpuTelemetry = gpu,
            GpuMemoryHeadroom = 0.10,
            Monitor = monitor,
        };
        // No placeholder batches here: each of the first two replicas is measured after its first real batch. So that
        // neither runs out of work before the measurements are done: after its first batch, the first replica waits
        // for the second's first, and then both wait until the third (which the cap lets start) is built.
        using var secondCalled = new ManualResetEventSlim();
        using var thirdBuilt = new ManualResetEventSlim();
        var calls = new int[2];
        var factory = new LambdaFactory<int, int>(slot =>
        {
            gpu.Allocate(3 * GiB);
            built.Enqueue(slot.Name);
            if (slot.IndexOnDevice == 2)
            {
                thirdBuilt.Set();
            }

            return new LambdaReplica<int, int>(batch =>
            {
                if (slot.IndexOnDevice == 1)
                {
                    secondCalled.Set();
                }

                if (slot.IndexOnDevice <= 1 && Interlocked.Increment(ref calls[slot.IndexOnDevice]) > 1)
                {
                    Assert.True(secondCalled.Wait(TimeSpan.FromMinutes(1)) && thirdBuilt.Wait(TimeSpan.FromMinutes(1)), "the third replica was never built");
                }

                return [.. batch.Select(Outcome.Success)];
            });
        });

        var results = await CollectBoundedAsync(InferencePool.RunAsync(FailureTests.AsyncRange(200), factory, options));

        Assert.Equal(200, results.Count(r => r.IsSuccess));
        Assert.Equal(["cuda:0#0", "cuda:0#1", "cuda:0#2"], built.Order(StringComparer.Ordinal));
        var capped = Assert.Single(events, e => e.Kind == ReplicaEventKind.Capped);
        Assert.Equal("cuda:0#3", capped.Slot.Name);
        const string Expected = "capped at 3 of 4 planned replicas: the first replica took 3072 MiB (with what the replicas share) and the second 3072 MiB, the cost of each more; 4096 MiB of 10240 MiB were then free, and 10 % (1024 MiB) is kept free";
        Assert.True(capped.Message.Contains(Expected, StringComparison.Ordinal), capped.Message);
        Assert.True(gpu.FreeBytes >= 1 * GiB);
    }

    [Fact]
    public async Task Run_WithGpuTelemetry_MeasuresAFullPlaceholderBatchAndCountsTheSecondReplicasCostForEachMore()
    {
        // 40 GiB card. The process's first session pays a 2 GiB context every other one shares; each replica holds
        // 1 GiB of weights and 0.5 GiB of activations per item of its largest batch so far (batch 8: 4 GiB). So the
        // first replica costs 7 GiB, each more 5. After two: 28 GiB free, 4 GiB kept → room for 4 more: 6 in all
        // (2 + 6 × 5 = 32 GiB used, 8 free; a seventh would leave 3). Measured after a first real batch of one
        // item, or from the first replica's 7 GiB, the cap would be 8 (out of memory) or 5.
        var gpu = new FakeGpu(40 * GiB);
        var firstCalls = new ConcurrentDictionary<string, IReadOnlyList<int>>(StringComparer.Ordinal);
        var (monitor, events) = Watched();
        var context = 0;
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cuda:0", 8)),
            MaxBatchSize = 8,
            MaxBatchDelay = TimeSpan.Zero, // real batches start small: only the placeholder batch is full
            GpuTelemetry = gpu,
            GpuMemoryHeadroom = 0.10,
            Monitor = monitor,
        };
        var built = new ConcurrentQueue<string>();
        // So that the measured two do not finish the job before the cap lets the others start, they take real items
        // only once the sixth replica is built.
        using var sixthBuilt = new ManualResetEventSlim();
        var factory = new WarmUpFactory(slot =>
        {
            built.Enqueue(slot.Name);
            if (slot.IndexOnDevice == 5)
            {
                sixthBuilt.Set();
            }

            if (Interlocked.Exchange(ref context, 1) == 0)
            {
                gpu.Allocate(2 * GiB);
            }

            gpu.Allocate(1 * GiB);
            var arena = 0;
            return new LambdaReplica<int, int>(batch =>
            {
                firstCalls.TryAdd(slot.Name, [.. batch]);
                if (slot.IndexOnDevice <= 1 && batch[0] >= 0)
                {
                    Assert.True(sixthBuilt.Wait(TimeSpan.FromMinutes(1)), "the sixth replica was never built");
                }

                if (batch.Count > arena)
                {
                    gpu.Allocate((batch.Count - arena) * GiB / 2);
                    arena = batch.Count;
                }

                return [.. batch.Select(Outcome.Success)];
            });
        });

        var results = await CollectBoundedAsync(InferencePool.RunAsync(FailureTests.AsyncRange(300), factory, options));

        Assert.Equal(300, results.Count);
        Assert.All(results, r => Assert.True(r.IsSuccess && r.Item >= 0)); // the placeholder batches are no results
        Assert.Equal(Enumerable.Range(0, 6).Select(i => $"cuda:0#{i}"), built.Order(StringComparer.Ordinal));
        Assert.Equal(Enumerable.Repeat(-1, 8), firstCalls["cuda:0#0"]); // the placeholder batch, full size
        Assert.Equal(Enumerable.Repeat(-1, 8), firstCalls["cuda:0#1"]);
        Assert.Equal(["cuda:0#6", "cuda:0#7"], events.Where(e => e.Kind == ReplicaEventKind.Capped).Select(e => e.Slot.Name).Order(StringComparer.Ordinal));
        Assert.Contains(
            "capped at 6 of 8 planned replicas: the first replica took 7168 MiB (with what the replicas share) and the second 5120 MiB, the cost of each more; 28672 MiB of 40960 MiB were then free, and 10 % (4096 MiB) is kept free",
            events.First(e => e.Kind == ReplicaEventKind.Capped).Message,
            StringComparison.Ordinal);
        Assert.True(gpu.FreeBytes >= 4 * GiB, $"{gpu.FreeBytes / GiB} GiB free");
    }

    [Fact]
    public async Task Run_WhenAllFitAtTheFirstReplicasCost_StartsTheRestAtOnceWithoutMeasuringTheSecond()
    {
        // As on the first real GPU (an H200, 140 GiB): a replica takes about 0.5 GiB, so 4 of them fit many times
        // over even at the first one's cost. Only the first is measured (on a placeholder batch); the second runs no
        // placeholder batch, and nothing is capped. Each replica's first real batch waits until all four are built,
        // so the job cannot finish on the first replica alone before the others start.
        var gpu = new FakeGpu(140 * GiB);
        var firstCalls = new ConcurrentDictionary<string, IReadOnlyList<int>>(StringComparer.Ordinal);
        var (monitor, events) = Watched();
        using var allBuilt = new CountdownEvent(4);
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cuda:0", 4)),
            MaxBatchSize = 4,
            GpuTelemetry = gpu,
            GpuMemoryHeadroom = 0.10,
            Monitor = monitor,
        };
        var factory = new WarmUpFactory(slot =>
        {
            gpu.Allocate(GiB / 2);
            allBuilt.Signal();
            return new LambdaReplica<int, int>(batch =>
            {
                firstCalls.TryAdd(slot.Name, [.. batch]);
                if (batch[0] >= 0)
                {
                    Assert.True(allBuilt.Wait(TimeSpan.FromMinutes(1)), "not every replica was built");
                }

                return [.. batch.Select(Outcome.Success)];
            });
        });

        var results = await CollectBoundedAsync(InferencePool.RunAsync(FailureTests.AsyncRange(100), factory, options));

        Assert.Equal(100, results.Count(r => r.IsSuccess));
        Assert.Equal(Enumerable.Repeat(-1, 4), firstCalls["cuda:0#0"]); // the first is measured on a placeholder batch
        Assert.All(firstCalls.Where(c => c.Key != "cuda:0#0"), c => Assert.True(c.Value[0] >= 0, $"{c.Key} ran a placeholder batch"));
        Assert.DoesNotContain(events, e => e.Kind == ReplicaEventKind.Capped);
    }

    [Theory]
    [InlineData(140, 139, 8, true)] // 1 GiB each: 7 more fit at once
    [InlineData(40, 33, 8, false)] // 7 GiB (context included): 7 more would not fit at that cost; the second is measured
    [InlineData(40, 33, 1, false)] // one planned: nothing to decide
    [InlineData(40, 40, 4, false)] // nothing measured
    public void AllFitAtFirstCost_OnlyWhenEveryPlannedReplicaFitsAtTheFirstOnesFigure(long total, long freeAfter, int planned, bool fits)
    {
        GpuReading Free(long gib) => new(total * GiB, gib * GiB, null);
        var cap = GpuReplicaCap.AllFitAtFirstCost(Device.Cuda(0), Free(total), Free(freeAfter), planned, 0.10);

        Assert.Equal(fits, cap is not null);
        if (cap is not null)
        {
            Assert.Equal(planned, cap.Replicas);
            Assert.Contains("so the others start at once", cap.Reason, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData(40, 33, 28, 8, 6)] // the second's 5 GiB counts for each more, not the first's 7
    [InlineData(10, 5, 0, 4, 1)] // the second left less than the headroom: it goes too
    [InlineData(10, 7, 7, 4, 4)] // the second's cost could not be seen: the first's 3 GiB counts (2 built + 2 more)
    public void Compute_WithASecondReplica_CountsItsCostForEachMore(long total, long freeBetween, long freeAfterSecond, int planned, int expected)
    {
        GpuReading Free(long gib) => new(total * GiB, gib * GiB, null);
        var cap = GpuReplicaCap.Compute(Device.Cuda(0), Free(total), Free(freeBetween), Free(freeBetween), Free(freeAfterSecond), planned, 0.10);

        Assert.Equal(expected, cap.Replicas);
    }

    [Theory]
    [InlineData(10, 10, 7, 4, 3)] // room for 2 more beside the first
    [InlineData(10, 10, 7, 2, 2)] // fewer planned than fit: the plan stands
    [InlineData(10, 3, 0, 4, 1)] // nothing left: the first one stays, alone
    [InlineData(10, 7, 7, 4, 4)] // nothing measured (memory did not drop): the plan stands
    public void Compute_CapsAtWhatFitsButNeverBelowOne(long total, long freeBefore, long freeAfter, int planned, int expected)
    {
        var cap = GpuReplicaCap.Compute(Device.Cuda(1), new GpuReading(total * GiB, freeBefore * GiB, null), new GpuReading(total * GiB, freeAfter * GiB, null), planned, 0.10);

        Assert.Equal(expected, cap.Replicas);
        Assert.StartsWith("cuda:1: ", cap.Reason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("CUDA failure 2: out of memory ; GPU=0", FaultKind.OutOfMemory)]
    [InlineData("Failed to allocate memory for requested buffer of size 123", FaultKind.OutOfMemory)]
    [InlineData("CUDA_ERROR_OUT_OF_MEMORY", FaultKind.OutOfMemory)]
    [InlineData("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB", FaultKind.OutOfMemory)]
    [InlineData("[ONNXRuntimeError] : 1 : FAIL : CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED", FaultKind.OutOfMemory)]
    [InlineData("CUDNN failure 4: CUDNN_STATUS_ALLOC_FAILED ; GPU=0", FaultKind.OutOfMemory)]
    [InlineData("CUDA failure 700: an illegal memory access was encountered ; GPU=0", FaultKind.Replica)]
    [InlineData("RuntimeError: CUDA error: an illegal memory access was encountered", FaultKind.Replica)]
    [InlineData("Got invalid dimensions for input", FaultKind.Item)]
    public void DefaultClassifyFault_RecognisesDeviceOutOfMemoryMessages(string message, FaultKind expected)
    {
        Assert.Equal(expected, InferencePoolOptions.DefaultClassifyFault(new InvalidOperationException(message)));
#pragma warning disable CA2201 // the runtime throws it; the classifier must recognise it
        Assert.Equal(FaultKind.OutOfMemory, InferencePoolOptions.DefaultClassifyFault(new OutOfMemoryException()));
#pragma warning restore CA2201
    }

    /// <summary>A monitor whose replica events (started, capped, halved, …) are kept in order.</summary>
    private static (PoolMonitor Monitor, ConcurrentQueue<ReplicaEvent> Events) Watched()
    {
        var events = new ConcurrentQueue<ReplicaEvent>();
        var monitor = new PoolMonitor();
        monitor.ReplicaChanged += (_, e) => events.Enqueue(e);
        return (monitor, events);
    }

    /// <summary>A factory that offers placeholder batches (of -1s) for the pool to warm replicas up with before measuring them.</summary>
    private sealed class WarmUpFactory(Func<ReplicaSlot, IReplica<int, int>> create) : IReplicaFactory<int, int>, IWarmUpInputs<int>
    {
        public ValueTask<IReplica<int, int>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default) => ValueTask.FromResult(create(slot));

        public IReadOnlyList<int>? WarmUpBatch(int batchSize) => [.. Enumerable.Repeat(-1, batchSize)];
    }

    /// <summary>A GPU whose free memory drops as replicas allocate.</summary>
    private sealed class FakeGpu(long total) : IGpuTelemetry
    {
        private long _used;

        public long FreeBytes => total - Interlocked.Read(ref _used);

        public void Allocate(long bytes) => Interlocked.Add(ref _used, bytes);

        public GpuReading? Read(Device gpu) => gpu == Device.Cuda(0) ? new GpuReading(total, FreeBytes, 50) : null;
    }
}
