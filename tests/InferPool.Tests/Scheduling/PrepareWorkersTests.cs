using InferPool.Diagnostics;
using InferPool.Replicas;
using InferPool.Scheduling;
using static InferPool.Tests.PoolTestKit;
using static InferPool.Tests.Scheduling.FailureTests;

namespace InferPool.Tests.Scheduling;

public class PrepareWorkersTests
{
    [Fact]
    public void Starts_WithOneWorker_AndCallsOneMorePerWaitOnPreparation_UpToTheLimit()
    {
        var workers = new PrepareWorkers(3);
        Assert.Equal(1, workers.Running);

        workers.ReplicaWaiting(nothingPrepared: false); // items are prepared, only not batched yet: no call
        workers.ReplicaFed(TimeSpan.Zero);
        Assert.Equal(1, workers.Running);
        Assert.Equal(0, workers.ReplicaWaits);

        workers.ReplicaWaiting(nothingPrepared: true);
        Assert.Equal(2, workers.Running);
        Assert.True(workers.WaitToBeCalledAsync(CancellationToken.None).IsCompleted);

        // A worker starting an item while that replica still waits and nothing is prepared calls one more.
        workers.Preparing(nothingPrepared: true);
        Assert.Equal(3, workers.Running);
        workers.Preparing(nothingPrepared: true);
        Assert.Equal(3, workers.Running);
        Assert.Equal(3, workers.MostRunning);

        workers.ReplicaFed(TimeSpan.FromMilliseconds(40));
        Assert.Equal(1, workers.ReplicaWaits);
        Assert.Equal(TimeSpan.FromMilliseconds(40), workers.ReplicaWaitTime);
    }

    [Fact]
    public void Preparing_WithNoReplicaWaiting_CallsNobody()
    {
        var workers = new PrepareWorkers(4);
        workers.Preparing(nothingPrepared: true); // the replicas are still being built: preparation is not behind yet
        Assert.Equal(1, workers.Running);
        Assert.False(workers.WaitToBeCalledAsync(CancellationToken.None).IsCompleted);
    }

    [Fact]
    public void QueueFull_ParksWorkers_DownToOne()
    {
        var workers = new PrepareWorkers(3);
        workers.ReplicaWaiting(nothingPrepared: true);
        workers.Preparing(nothingPrepared: true);
        Assert.Equal(3, workers.Running);

        Assert.True(workers.QueueWasFull());
        Assert.True(workers.QueueWasFull());
        Assert.False(workers.QueueWasFull()); // the last one keeps running
        Assert.Equal(1, workers.Running);
        Assert.Equal(3, workers.QueueFull);
        Assert.Equal(3, workers.MostRunning);
    }

    [Fact]
    public async Task Finish_LetsEveryParkedWorkerGo_AndCallsNoMore()
    {
        var workers = new PrepareWorkers(3);
        var parked = new[] { workers.WaitToBeCalledAsync(CancellationToken.None), workers.WaitToBeCalledAsync(CancellationToken.None) };
        Assert.DoesNotContain(parked, t => t.IsCompleted);

        workers.Finish();
        await Task.WhenAll(parked).WaitAsync(Bound);
        workers.ReplicaWaiting(nothingPrepared: true);
        Assert.Equal(1, workers.Running);
        Assert.False(workers.QueueWasFull());
    }

    [Fact]
    public async Task Run_PreparationTheBottleneck_CallsInEveryWorker()
    {
        // The first four prepares wait (bounded) until four run at once. One worker runs while the replica is built;
        // the replica then waits on preparation, and each worker that starts an item while it waits calls in one more.
        var four = new Rendezvous(4);
        var monitor = new PoolMonitor();
        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            AsyncRange(40),
            async (item, ct) =>
            {
                if (item < 4)
                {
                    await four.ArriveAndWaitAsync(ct); // times out (failing the item) unless four prepares run at once
                }

                return item;
            },
            ReplicaFactory.FromBlocking<int, int, int>(_ => 0, (_, batch, _) => batch),
            new InferencePoolOptions { PrepareParallelism = 4, MaxInFlight = 40, Replicas = Plan(("cpu", 1)), Monitor = monitor }));

        Assert.Equal(Enumerable.Range(0, 40), results.Select(r => r.Value));
        var prepare = Assert.IsType<PrepareSnapshot>(monitor.Snapshot().Prepare);
        Assert.Equal(4, prepare.MostWorkers);
        Assert.Equal(4, prepare.WorkerLimit);
        Assert.True(prepare.ReplicaWaits >= 1);
        Assert.True(prepare.ReplicaWaitTime > TimeSpan.Zero);
    }

    [Fact]
    public async Task Run_InferenceTheBottleneck_WorkersCalledInEarlierPark_OnceTheQueueIsFull()
    {
        // Phase one makes preparation the bottleneck (four workers called in, as above). From item 4 on, the replica
        // finishes each item only once the prepared queue (16 items) is full again: inference is the bottleneck, the
        // workers that find the queue full park, down to one, and none is called back. At item 100 one runs.
        const int Items = 200;
        var four = new Rendezvous(4);
        var monitor = new PoolMonitor();
        PrepareSnapshot? midway = null;
        var results = await CollectBoundedAsync(InferencePool.RunAsync(
            AsyncRange(Items),
            async (item, ct) =>
            {
                if (item < 4)
                {
                    await four.ArriveAndWaitAsync(ct); // times out (failing the item) unless four prepares run at once
                }

                return item;
            },
            ReplicaFactory.FromBlocking<int, int, int>(_ => 0, (_, batch, _) =>
            {
                var k = batch[0];
                if (k is >= 4 and <= 100)
                {
                    Assert.True(SpinWait.SpinUntil(() => monitor.Snapshot().Prepare!.PreparedWaiting == 16, Bound), "the prepared queue never filled");
                }

                if (k == 100)
                {
                    midway = monitor.Snapshot().Prepare;
                }

                return batch;
            }),
            new InferencePoolOptions { PrepareParallelism = 4, MaxInFlight = Items, Replicas = Plan(("cpu", 1)), Monitor = monitor }));

        Assert.Equal(Enumerable.Range(0, Items), results.Select(r => r.Value));
        Assert.NotNull(midway);
        Assert.Equal(4, midway.MostWorkers);
        Assert.Equal(1, midway.Workers);
        Assert.True(midway.QueueFull >= 3);
        Assert.Equal(16, midway.PreparedWaiting);
    }
}

/// <summary>Lets its callers go once <c>count</c> of them have arrived; a bounded wait, never blocking a thread.</summary>
internal sealed class Rendezvous(int count)
{
    private readonly TaskCompletionSource _all = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _arrived;

    public Task ArriveAndWaitAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Increment(ref _arrived) == count)
        {
            _all.SetResult();
        }

        return _all.Task.WaitAsync(PoolTestKit.Bound, cancellationToken);
    }
}
