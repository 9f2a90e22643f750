using System.Collections.Concurrent;
using InferPool.Devices;
using InferPool.Diagnostics;
using InferPool.Replicas;
using InferPool.Results;
using static InferPool.Tests.PoolTestKit;

namespace InferPool.Tests.Scheduling;

public class FailureTests
{
    [Fact]
    public async Task Run_ItemThrows_SplitsBatchSoOnlyTheBadItemFails()
    {
        var calls = new ConcurrentQueue<int>();
        var options = new InferencePoolOptions { MaxBatchSize = 8, MaxBatchDelay = TimeSpan.FromHours(1) };

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            Enumerable.Range(0, 16),
            _ => 0,
            (_, batch, _) =>
            {
                calls.Enqueue(batch.Count);
                return batch.Contains(13) ? throw new InvalidDataException("13 is unlucky") : batch;
            },
            options));

        Assert.Equal(15, results.Count(r => r.IsSuccess));
        var bad = Assert.Single(results, r => !r.IsSuccess);
        Assert.Equal(13, bad.Item);
        Assert.Equal(nameof(InvalidDataException), bad.Error!.Type);
        Assert.Equal("13 is unlucky", bad.Error.Message);
        Assert.Equal(FailureStage.Infer, bad.Error.Stage);
        Assert.Equal(1, bad.Attempts);

        // [0..7] ok; [8..15] fails → [8..11] ok, [12..15] fails → [12,13] fails → [12] ok, [13] fails; [14,15] ok.
        // Finding the bad item costs 2·log2(batch) extra calls, and no good item fails.
        Assert.Equal([8, 8, 4, 4, 2, 1, 1, 2], calls);
    }

    [Fact]
    public async Task Run_ReplicaReportsPerItemFailure_OthersInBatchSucceed()
    {
        var factory = new LambdaFactory<int, int>(_ => new LambdaReplica<int, int>(batch =>
            [.. batch.Select(x => x % 5 == 0 ? Outcome.Failure<int>(new ItemError("BadInput", $"{x} is a multiple of 5", FailureStage.Infer)) : Outcome.Success(x))]));
        var options = new InferencePoolOptions { MaxBatchSize = 10 };

        var results = await CollectBoundedAsync(InferencePool.RunAsync(AsyncRange(50), factory, options));

        Assert.Equal(10, results.Count(r => !r.IsSuccess));
        Assert.All(results.Where(r => !r.IsSuccess), r => Assert.Equal($"{r.Item} is a multiple of 5", r.Error!.Message));
    }

    [Fact]
    public async Task Run_PoisonItemBreaksReplica_ReplicaIsRebuiltAndItemFailsAfterMaxAttempts()
    {
        var builds = 0;
        var disposed = 0;
        var events = new ConcurrentQueue<ReplicaEvent>();
        var monitor = new PoolMonitor();
        monitor.ReplicaChanged += (_, e) => events.Enqueue(e);
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cpu", 2)),
            MaxBatchSize = 4,
            MaxBatchDelay = TimeSpan.FromHours(1), // batches are always full: [4..7] holds the poison item
            MaxAttempts = 3,
            RestartBackoff = TimeSpan.Zero,
            Monitor = monitor,
        };
        var factory = new LambdaFactory<int, int>(_ =>
        {
            Interlocked.Increment(ref builds);
            return new LambdaReplica<int, int>(
                batch => batch.Contains(7) ? throw new ReplicaFaultException("worker died on 7") : [.. batch.Select(Outcome.Success)],
                () => Interlocked.Increment(ref disposed));
        });

        var results = await CollectBoundedAsync(InferencePool.RunAsync(AsyncRange(40), factory, options));

        Assert.Equal(39, results.Count(r => r.IsSuccess));
        var poison = Assert.Single(results, r => !r.IsSuccess);
        Assert.Equal(7, poison.Item);
        Assert.Equal(3, poison.Attempts);
        Assert.Equal(FailureStage.Replica, poison.Error!.Stage);
        Assert.Contains("worker died on 7", poison.Error.Message, StringComparison.Ordinal);
        Assert.All(results.Where(r => r.IsSuccess), r => Assert.Equal(1, r.Attempts));

        // Batch of 4 → 2 → 1, then two more tries alone: 5 faults, each followed by a rebuild.
        Assert.Equal(5, events.Count(e => e.Kind == ReplicaEventKind.Faulted));
        Assert.Equal(2 + 5, builds);
        Assert.Equal(builds, disposed);
    }

    [Fact]
    public async Task Run_ReplicaHangs_TimesOutAndTheJobCompletes()
    {
        using var never = new ManualResetEventSlim();
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cpu", 2)),
            BatchTimeout = TimeSpan.FromMilliseconds(300),
            MaxAttempts = 2,
            RestartBackoff = TimeSpan.Zero,
            DrainTimeout = TimeSpan.FromMilliseconds(100),
        };

        try
        {
            var results = await CollectBoundedAsync(InferencePool.RunAsync(
                Enumerable.Range(0, 20),
                _ => 0,
                (_, batch, _) =>
                {
                    if (batch[0] == 5)
                    {
                        never.Wait(CancellationToken.None); // ignores cancellation, like a stuck native call
                    }

                    return batch;
                },
                options));

            Assert.Equal(19, results.Count(r => r.IsSuccess));
            var hung = Assert.Single(results, r => !r.IsSuccess);
            Assert.Equal(5, hung.Item);
            Assert.Equal(nameof(TimeoutException), hung.Error!.Type);
            Assert.Equal(2, hung.Attempts);
        }
        finally
        {
            never.Set();
        }
    }

    [Fact]
    public async Task Run_TransientFault_RetriesAloneUntilItSucceeds()
    {
        var tries = new ConcurrentDictionary<int, int>();
        var options = new InferencePoolOptions
        {
            MaxAttempts = 3,
            ClassifyFault = ex => ex is IOException ? FaultKind.Transient : FaultKind.Item,
        };

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            Enumerable.Range(0, 5),
            _ => 0,
            (_, batch, _) => batch[0] == 2 && tries.AddOrUpdate(2, 1, (_, n) => n + 1) < 3 ? throw new IOException("flaky") : batch,
            options));

        Assert.All(results, r => Assert.True(r.IsSuccess));
        Assert.Equal(3, results.Single(r => r.Item == 2).Attempts);
    }

    [Fact]
    public async Task Run_DeviceFactoryKeepsFailing_DeviceIsRemovedAndJobFinishesElsewhere()
    {
        var events = new ConcurrentQueue<ReplicaEvent>();
        var deviceRemoved = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var monitor = new PoolMonitor();
        monitor.ReplicaChanged += (_, e) =>
        {
            events.Enqueue(e);
            if (e.Kind == ReplicaEventKind.DeviceRemoved)
            {
                deviceRemoved.TrySetResult();
            }
        };
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cuda:0", 2), ("cpu", 1)),
            MaxReplicaStartFailures = 3,
            RestartBackoff = TimeSpan.Zero,
            Monitor = monitor,
        };

        // The input waits for the removal, so the job is still running when the GPU gives up.
        async IAsyncEnumerable<int> Source()
        {
            await deviceRemoved.Task;
            for (var i = 0; i < 100; i++)
            {
                yield return i;
            }
        }

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            Source(),
            ReplicaFactory.FromBlocking<int, int, int>(slot => slot.Device.IsGpu ? throw new InvalidOperationException("CUDA driver not found") : 0, (_, batch, _) => batch),
            options));

        Assert.All(results, r => Assert.Equal(Device.Cpu, r.Device));
        Assert.Equal(100, results.Count);
        var removed = Assert.Single(events, e => e.Kind == ReplicaEventKind.DeviceRemoved);
        Assert.Contains("cuda:0 was removed", removed.Message, StringComparison.Ordinal);
        Assert.Contains("CUDA driver not found", removed.Message, StringComparison.Ordinal);
        Assert.Equal(6, events.Count(e => e.Kind is ReplicaEventKind.StartFailed or ReplicaEventKind.Removed));
        Assert.True(monitor.Snapshot().Devices.Single(d => d.Device.IsGpu).Removed);
    }

    [Fact]
    public async Task Run_NoReplicaCanStart_JobFailsWithReason()
    {
        var options = new InferencePoolOptions { Replicas = Plan(("cpu", 2)), RestartBackoff = TimeSpan.Zero };

        var ex = await Assert.ThrowsAsync<InferencePoolException>(() => CollectBoundedAsync(InferencePool.RunAsync<int, int, int>(
            Enumerable.Range(0, 10),
            _ => throw new FileNotFoundException("model.onnx is missing"),
            (_, batch, _) => batch,
            options)));

        Assert.Contains("No replica is left", ex.Message, StringComparison.Ordinal);
        Assert.Contains("model.onnx is missing", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_InputThrows_DeliversEarlierResultsThenFails()
    {
        static async IAsyncEnumerable<int> Broken()
        {
            for (var i = 0; i < 10; i++)
            {
                await Task.Yield();
                yield return i;
            }

            throw new IOException("disk went away");
        }

        var received = new List<int>();
        var ex = await Assert.ThrowsAsync<InferencePoolException>(async () =>
        {
            await foreach (var r in InferencePool.RunAsync(Broken(), new LambdaFactory<int, int>(_ => new LambdaReplica<int, int>(b => [.. b.Select(Outcome.Success)]))))
            {
                received.Add(r.Item);
            }
        }).WaitAsync(Bound);

        Assert.Equal(Enumerable.Range(0, 10), received);
        Assert.Contains("after 10 item(s)", ex.Message, StringComparison.Ordinal);
        Assert.IsType<IOException>(ex.InnerException);
    }

    [Fact]
    public void Options_OutOfRange_SaysWhichAndWhatIsAllowed()
    {
        var ex = Assert.Throws<ArgumentException>(() => InferencePool.RunAsync(AsyncRange(1), new LambdaFactory<int, int>(_ => null!), new InferencePoolOptions { MaxBatchSize = 0 }));
        Assert.Contains("MaxBatchSize is 0; it must be at least 1", ex.Message, StringComparison.Ordinal);
    }

    internal static async IAsyncEnumerable<int> AsyncRange(int count)
    {
        for (var i = 0; i < count; i++)
        {
            await Task.Yield();
            yield return i;
        }
    }
}

internal sealed class LambdaFactory<TIn, TOut>(Func<ReplicaSlot, IReplica<TIn, TOut>> create) : IReplicaFactory<TIn, TOut>
{
    public ValueTask<IReplica<TIn, TOut>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default) => ValueTask.FromResult(create(slot));
}

internal sealed class LambdaReplica<TIn, TOut>(Func<IReadOnlyList<TIn>, IReadOnlyList<Outcome<TOut>>> infer, Action? onDispose = null) : IReplica<TIn, TOut>
{
    public ValueTask<IReadOnlyList<Outcome<TOut>>> InferAsync(IReadOnlyList<TIn> inputs, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(infer(inputs));

    public ValueTask DisposeAsync()
    {
        onDispose?.Invoke();
        return ValueTask.CompletedTask;
    }
}
