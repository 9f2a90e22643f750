using System.Collections.Concurrent;
using InferPool.Devices;
using InferPool.Replicas;
using InferPool.Results;
using static InferPool.Tests.PoolTestKit;

namespace InferPool.Tests.Scheduling;

public class SchedulingTests
{
    [Fact]
    public async Task Run_SquaresEveryItem_InInputOrder()
    {
        var created = new ConcurrentBag<RecordingModel>();
        var options = new InferencePoolOptions { Replicas = Plan(("cpu", 3)), MaxBatchSize = 4 };

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            Enumerable.Range(0, 1000),
            slot => RecordingModel.Create(slot, created),
            (model, batch, _) => model.Square(batch),
            options));

        Assert.Equal(Enumerable.Range(0, 1000), results.Select(r => r.Item));
        Assert.Equal(Enumerable.Range(0, 1000).Select(i => (long)i), results.Select(r => r.Index));
        Assert.All(results, r =>
        {
            Assert.True(r.IsSuccess);
            Assert.Equal(r.Item * r.Item, r.Value);
            Assert.Equal(1, r.Attempts);
            Assert.Equal(Device.Cpu, r.Device);
            Assert.NotNull(r.Replica);
        });
        Assert.Equal(3, created.Count);
        Assert.All(created, m => Assert.True(m.Disposed));
    }

    [Fact]
    public async Task Run_SlowDevice_TakesFewerBatches()
    {
        // The slow device's replica can finish an item only after the fast one has finished four more: it is
        // exactly 4x slower, without any clock. Pull-based scheduling gives it at most 1/5 of the work (it can
        // never get ahead of its tokens) and, since work is always waiting, not much less; static round-robin
        // would give it half, and the job would take as long as the slow device needs for half.
        const int Items = 1000;
        var fastDone = new SemaphoreSlim(0);
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cuda:0", 1), ("cpu", 1)),
            MaxInFlight = 8,
        };

        IEnumerable<int> Source()
        {
            for (var i = 0; i < Items; i++)
            {
                yield return i;
            }

            // The input has ended: let the slow replica finish whatever it holds.
            fastDone.Release(Items);
        }

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            Source(),
            slot => slot.Device,
            (device, batch, ct) =>
            {
                if (device.IsGpu)
                {
                    fastDone.Release();
                }
                else
                {
                    for (var k = 0; k < 4; k++)
                    {
                        fastDone.Wait(ct);
                    }
                }

                return batch;
            },
            options));

        var slow = results.Count(r => r.Device == Device.Cpu);
        var fast = results.Count(r => r.Device == Device.Cuda(0));
        Assert.Equal(Items, slow + fast);
        Assert.InRange(slow, Items / 10, (Items / 5) + 8);
        Assert.InRange(fast, (Items * 4 / 5) - 8, Items * 9 / 10);
    }

    [Fact]
    public async Task Run_UnboundedInput_NeverHoldsMoreThanMaxInFlight()
    {
        const int Items = 1_000_000;
        const int MaxInFlight = 512;
        long produced = 0;
        long consumed = 0;
        long worst = 0;
        var monitor = new InferPool.Diagnostics.PoolMonitor();
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cpu", 2)),
            MaxBatchSize = 64,
            MaxInFlight = MaxInFlight,
            Order = ResultOrder.Completion,
            Monitor = monitor,
        };

        IEnumerable<int> Source()
        {
            for (var i = 0; i < Items; i++)
            {
                var held = Interlocked.Increment(ref produced) - Volatile.Read(ref consumed);
                if (held > Volatile.Read(ref worst))
                {
                    Volatile.Write(ref worst, held);
                }

                yield return i;
            }
        }

        long sum = 0;
        var run = InferencePool.RunAsync(Source(), _ => 0, (_, batch, _) => batch, options);
        await foreach (var r in run)
        {
            sum += r.Value;
            Interlocked.Increment(ref consumed);
        }

        Assert.Equal(Items, consumed);
        Assert.Equal((long)Items * (Items - 1) / 2, sum);

        // The reader holds one item from the source while it waits for room, hence + 1.
        Assert.InRange(worst, 1, MaxInFlight + 1);
        Assert.InRange(monitor.Snapshot().PeakInFlight, 1, MaxInFlight);
    }

    [Fact]
    public async Task Run_CompletionOrder_YieldsEachItemOnce()
    {
        var options = new InferencePoolOptions { Replicas = Plan(("cpu", 4)), MaxBatchSize = 3, Order = ResultOrder.Completion };

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            Enumerable.Range(0, 500),
            _ => new Random(7),
            (random, batch, _) =>
            {
                Thread.SpinWait(random.Next(1000));
                return batch;
            },
            options));

        Assert.Equal(Enumerable.Range(0, 500), results.Select(r => r.Item).Order());
    }

    [Fact]
    public async Task Run_InputOrder_HoldsBackFastItemsBehindASlowOne()
    {
        var releaseFirst = new ManualResetEventSlim();
        var options = new InferencePoolOptions { Replicas = Plan(("cpu", 2)), MaxInFlight = 16 };
        var seen = new ConcurrentQueue<int>();

        var run = InferencePool.RunAsync(
            Enumerable.Range(0, 40),
            _ => 0,
            (_, batch, ct) =>
            {
                if (batch[0] == 0)
                {
                    releaseFirst.Wait(ct);
                }

                seen.Enqueue(batch[0]);
                if (seen.Count == 15)
                {
                    // Item 0 is still running while 15 others finished: the window is full.
                    releaseFirst.Set();
                }

                return batch;
            },
            options);

        var results = await CollectBoundedAsync(run);

        Assert.Equal(Enumerable.Range(0, 40), results.Select(r => r.Item));
    }

    [Fact]
    public async Task Run_BlockingModel_RunsEachReplicaOnItsOwnDedicatedThread()
    {
        var created = new ConcurrentBag<RecordingModel>();
        var poolThreadCalls = 0;
        using var bothWorking = new Barrier(2);
        var options = new InferencePoolOptions { Replicas = Plan(("cpu", 2)), MaxBatchSize = 2 };

        await CollectBoundedAsync(InferencePool.RunAsync(
            Enumerable.Range(0, 200),
            slot => RecordingModel.Create(slot, created),
            (model, batch, _) =>
            {
                if (Thread.CurrentThread.IsThreadPoolThread)
                {
                    Interlocked.Increment(ref poolThreadCalls);
                }

                // Each replica's first call waits for the other's, so both surely run batches.
                if (model.BatchSizes.IsEmpty)
                {
                    Assert.True(bothWorking.SignalAndWait(Bound, CancellationToken.None));
                }

                return model.Square(batch);
            },
            options));

        Assert.Equal(0, poolThreadCalls);
        Assert.Equal(2, created.Count);
        Assert.All(created, m => Assert.Single(m.ThreadIds.Distinct()));
        Assert.NotEqual(created.First().ThreadIds.First(), created.Last().ThreadIds.First());
    }
}
