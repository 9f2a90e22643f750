using System.Threading.Channels;
using InferPool.Replicas;
using Microsoft.Extensions.Time.Testing;
using static InferPool.Tests.PoolTestKit;

namespace InferPool.Tests.Scheduling;

/// <summary>The documented restart backoff, 200 ms doubling to at most 10 s, on a fake clock that records every delay asked of it.</summary>
public class RestartBackoffTests
{
    [Fact]
    public async Task Run_ReplicaThatKeepsFailingToStart_WaitsTwoHundredMillisecondsDoublingToTenSeconds()
    {
        var time = new DelayRecordingTime();
        var attempts = 0;
        var factory = ReplicaFactory.FromAsync<int, object, int>(
            (_, _) => Interlocked.Increment(ref attempts) <= 9 ? throw new InvalidOperationException("not yet") : ValueTask.FromResult(new object()),
            (_, batch, _) => ValueTask.FromResult(batch));
        var options = new InferencePoolOptions { MaxReplicaStartFailures = 10, TimeProvider = time, MaxBatchSize = 1 };

        var run = CollectBoundedAsync(InferencePool.RunAsync(new[] { 1, 2, 3 }.ToAsyncEnumerable(), factory, options));

        // Each failed start asks the clock for one delay; the next try comes only once the clock has moved that far.
        for (var i = 0; i < 9; i++)
        {
            var delay = await time.Delays.Reader.ReadAsync().AsTask().WaitAsync(Bound);
            Assert.Equal(i + 1, Volatile.Read(ref attempts));
            time.Advance(delay - TimeSpan.FromMilliseconds(1));
            Assert.Equal(i + 1, Volatile.Read(ref attempts));
            time.Advance(TimeSpan.FromMilliseconds(1));
            time.Asked.Add(delay);
        }

        var results = await run;
        Assert.All(results, r => Assert.True(r.IsSuccess, r.Error?.ToString()));
        Assert.Equal(10, attempts);
        Assert.Equal([200.0, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000], time.Asked.Select(d => d.TotalMilliseconds));
    }

    [Fact]
    public async Task Run_BackoffZero_RetriesAtOnceWithoutAskingTheClock()
    {
        var time = new DelayRecordingTime();
        var attempts = 0;
        var factory = ReplicaFactory.FromAsync<int, object, int>(
            (_, _) => Interlocked.Increment(ref attempts) <= 2 ? throw new InvalidOperationException("not yet") : ValueTask.FromResult(new object()),
            (_, batch, _) => ValueTask.FromResult(batch));

        var options = new InferencePoolOptions { RestartBackoff = TimeSpan.Zero, TimeProvider = time, MaxBatchSize = 1 };
        var results = await CollectBoundedAsync(InferencePool.RunAsync(new[] { 1 }.ToAsyncEnumerable(), factory, options));

        Assert.True(results.Single().IsSuccess);
        // No backoff delay was asked for. The only timers allowed are the shutdown's bound on draining the replicas
        // (DrainTimeout), which the pool arms when a replica loop has not ended yet as the job ends: a matter of timing.
        time.Delays.Writer.Complete();
        Assert.All(await time.Delays.Reader.ReadAllAsync().ToListAsync(), d => Assert.Equal(options.DrainTimeout, d));
    }

    /// <summary>A fake clock that reports each one-shot timer (a Task.Delay) it is asked for.</summary>
    private sealed class DelayRecordingTime : FakeTimeProvider
    {
        public Channel<TimeSpan> Delays { get; } = Channel.CreateUnbounded<TimeSpan>();

        public List<TimeSpan> Asked { get; } = [];

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            if (dueTime > TimeSpan.Zero && dueTime != Timeout.InfiniteTimeSpan && period == Timeout.InfiniteTimeSpan)
            {
                Delays.Writer.TryWrite(dueTime);
            }

            return base.CreateTimer(callback, state, dueTime, period);
        }
    }
}
