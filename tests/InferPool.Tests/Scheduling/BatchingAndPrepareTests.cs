using System.Collections.Concurrent;
using InferPool.Replicas;
using InferPool.Results;
using Microsoft.Extensions.Time.Testing;
using static InferPool.Tests.PoolTestKit;
using static InferPool.Tests.Scheduling.FailureTests;

namespace InferPool.Tests.Scheduling;

public class BatchingAndPrepareTests
{
    [Fact]
    public async Task Run_PlentyOfInput_SendsFullBatches()
    {
        var sizes = new ConcurrentQueue<int>();
        var options = new InferencePoolOptions
        {
            MaxBatchSize = 8,
            MaxBatchDelay = TimeSpan.FromMinutes(5), // never reached: the fake clock does not move
            TimeProvider = new FakeTimeProvider(),
        };

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            Enumerable.Range(0, 100),
            _ => 0,
            (_, batch, _) =>
            {
                sizes.Enqueue(batch.Count);
                return batch;
            },
            options));

        Assert.Equal(100, results.Count);
        Assert.Equal([.. Enumerable.Repeat(8, 12), 4], sizes);
    }

    [Fact]
    public async Task Run_BatchSizeOne_SendsSingleItems()
    {
        var sizes = new ConcurrentQueue<int>();

        await CollectBoundedAsync(InferencePool.RunAsync(
            Enumerable.Range(0, 30),
            _ => 0,
            (_, batch, _) =>
            {
                sizes.Enqueue(batch.Count);
                return batch;
            },
            new InferencePoolOptions { Replicas = Plan(("cpu", 2)), MaxBatchSize = 1 }));

        Assert.Equal(30, sizes.Count);
        Assert.All(sizes, s => Assert.Equal(1, s));
    }

    [Fact]
    public async Task Run_InputStalls_PartialBatchLeavesAfterMaxDelay()
    {
        var time = new FakeTimeProvider();
        var firstBatch = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var options = new InferencePoolOptions { MaxBatchSize = 16, MaxBatchDelay = TimeSpan.FromMilliseconds(50), TimeProvider = time };

        async IAsyncEnumerable<int> Source()
        {
            for (var i = 0; i < 3; i++)
            {
                yield return i;
            }

            // The input stalls until the partial batch has been sent on its own.
            await firstBatch.Task;
            yield return 3;
        }

        var run = CollectBoundedAsync(InferencePool.RunAsync(
            Source(),
            ReplicaFactory.FromBlocking<int, int, int>(_ => 0, (_, batch, _) =>
            {
                firstBatch.TrySetResult(batch.Count);
                return batch;
            }),
            options));

        // Move the fake clock until the batcher's delay has passed; each step is a bounded wait, not a sleep.
        for (var step = 0; step < 2000 && !firstBatch.Task.IsCompleted; step++)
        {
            time.Advance(TimeSpan.FromMilliseconds(50));
            await Task.WhenAny(firstBatch.Task, Task.Delay(5));
        }

        Assert.Equal(3, await firstBatch.Task.WaitAsync(Bound));
        Assert.Equal(4, (await run).Count);
    }

    [Fact]
    public async Task Run_PrepareStage_RunsInParallelAndOverlapsInference()
    {
        // Item 0's inference waits until item 6 has been prepared: if preparation did not overlap
        // inference, this would never finish. Two prepares must be in the barrier at once.
        using var barrier = new Barrier(2);
        using var sixPrepared = new ManualResetEventSlim();
        var options = new InferencePoolOptions { PrepareParallelism = 2, MaxInFlight = 16 };

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            AsyncRange(20),
            (item, _) =>
            {
                if (item < 2)
                {
                    Assert.True(barrier.SignalAndWait(Bound, CancellationToken.None), "two prepare workers never ran at the same time");
                }

                if (item == 6)
                {
                    sixPrepared.Set();
                }

                return ValueTask.FromResult($"prepared {item}");
            },
            ReplicaFactory.FromBlocking<string, int, string>(_ => 0, (_, batch, ct) =>
            {
                if (batch[0] == "prepared 0")
                {
                    Assert.True(sixPrepared.Wait(Bound, ct));
                }

                return batch;
            }),
            options));

        Assert.Equal(Enumerable.Range(0, 20).Select(i => $"prepared {i}"), results.Select(r => r.Value));
        Assert.Equal(Enumerable.Range(0, 20), results.Select(r => r.Item));
    }

    [Fact]
    public async Task Run_WhileNoReplicaHasStarted_OnePrepareWorkerRuns_AndAnotherJoinsWhenAReplicaWaitsOnPreparation()
    {
        // Item 0's prepare waits (bounded) for a second prepare to run beside it; the replica is built only after that
        // wait. Before the first replica starts, no second worker may join; once it waits on item 10, a second must run.
        var replicaReleased = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var secondEntered = new SemaphoreSlim(0);
        var gate = new Lock();
        var inPrepare = 0;
        var mostBeforeStart = 0;
        var overlapAfterStart = false;
        var window = TimeSpan.FromMilliseconds(500);

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            AsyncRange(20),
            async (item, ct) =>
            {
                var now = Interlocked.Increment(ref inPrepare);
                if (!replicaReleased.Task.IsCompleted)
                {
                    lock (gate)
                    {
                        mostBeforeStart = Math.Max(mostBeforeStart, now);
                    }
                }

                if (now >= 2)
                {
                    secondEntered.Release();
                }

                if (item == 0)
                {
                    await secondEntered.WaitAsync(window, ct);
                    replicaReleased.TrySetResult();
                }
                else if (item == 10)
                {
                    overlapAfterStart = now >= 2 || await secondEntered.WaitAsync(Bound, ct);
                }

                Interlocked.Decrement(ref inPrepare);
                return item;
            },
            ReplicaFactory.FromAsync<int, int, int>(
                async (_, ct) =>
                {
                    await replicaReleased.Task.WaitAsync(ct);
                    return 0;
                },
                (_, batch, _) => ValueTask.FromResult<IReadOnlyList<int>>(batch)),
            new InferencePoolOptions { PrepareParallelism = 2, MaxInFlight = 8, Replicas = Plan(("cpu", 1)) }));

        Assert.Equal(Enumerable.Range(0, 20), results.Select(r => r.Value));
        Assert.Equal(1, mostBeforeStart);
        Assert.True(overlapAfterStart, "the second prepare worker never joined after the replica started");
    }

    [Fact]
    public async Task Run_PrepareThrows_ItemFailsInPrepareStageAndOthersGoOn()
    {
        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            AsyncRange(10),
            (item, _) => item == 4 ? throw new InvalidDataException("not an image") : ValueTask.FromResult(item * 10),
            ReplicaFactory.FromBlocking<int, int, int>(_ => 0, (_, batch, _) => batch),
            new InferencePoolOptions { MaxBatchSize = 4 }));

        Assert.Equal(Enumerable.Range(0, 10), results.Select(r => r.Item));
        var bad = Assert.Single(results, r => !r.IsSuccess);
        Assert.Equal(4, bad.Item);
        Assert.Equal(FailureStage.Prepare, bad.Error!.Stage);
        Assert.Null(bad.Replica);
        Assert.Equal(90, results[9].Value);
    }
}

public class PrepareReleaseTests
{
    [Fact]
    public async Task Release_IsCalledOnceForEveryPreparedItemWhenItsResultIsFinal()
    {
        var released = new System.Collections.Concurrent.ConcurrentBag<int>();
        var attemptsOnThree = 0;
        var stage = new PrepareStage<int, int>((item, _) => item == 9 ? throw new InvalidDataException("bad input") : ValueTask.FromResult(item))
        {
            Release = released.Add,
        };
        var factory = ReplicaFactory.FromBlocking<int, int, int>(_ => 0, (_, batch, _) =>
        {
            if (batch.Contains(3) && Interlocked.Increment(ref attemptsOnThree) == 1)
            {
                throw new ReplicaFaultException("crashed once while holding item 3");
            }

            return batch.Contains(5) ? throw new InvalidOperationException("5 fails") : batch;
        });

        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            AsyncRange(12),
            stage,
            factory,
            new InferencePoolOptions { MaxBatchSize = 4, RestartBackoff = TimeSpan.Zero }));

        Assert.Equal(12, results.Count);
        // Item 9 never got prepared, so nothing of it is released; every other item exactly once,
        // including item 3 (retried after the crash) and item 5 (failed in the model).
        Assert.Equal(Enumerable.Range(0, 12).Where(i => i != 9), released.Order());
    }
}
