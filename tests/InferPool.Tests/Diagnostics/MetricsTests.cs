using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using InferPool.Diagnostics;
using static InferPool.Tests.PoolTestKit;

namespace InferPool.Tests.Diagnostics;

[CollectionDefinition(nameof(MetricsTests), DisableParallelization = true)]
public class MetricsTestGroup;

[Collection(nameof(MetricsTests))]
public class MetricsTests
{
    [Fact]
    public async Task Run_PublishesItemBatchAndLatencyInstruments()
    {
        var longs = new ConcurrentDictionary<string, long>();
        var histogramCounts = new ConcurrentDictionary<string, long>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == InferPoolMetrics.MeterName)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            var status = "";
            foreach (var tag in tags)
            {
                if (tag.Key == "status")
                {
                    status = "." + tag.Value;
                }
            }

            longs.AddOrUpdate(instrument.Name + status, value, (_, v) => v + value);
        });
        listener.SetMeasurementEventCallback<int>((instrument, _, _, _) => histogramCounts.AddOrUpdate(instrument.Name, 1, (_, v) => v + 1));
        listener.SetMeasurementEventCallback<double>((instrument, _, _, _) => histogramCounts.AddOrUpdate(instrument.Name, 1, (_, v) => v + 1));
        listener.Start();

        var monitor = new PoolMonitor();
        await CollectBoundedAsync(InferencePool.RunAsync(
            Enumerable.Range(0, 100),
            _ => 0,
            (_, batch, _) => batch.Contains(50) ? throw new InvalidOperationException("bad") : batch,
            new InferencePoolOptions { MaxBatchSize = 10, MaxBatchDelay = TimeSpan.FromHours(1), Monitor = monitor }));

        Assert.Equal(99, longs["inferpool.items.ok"]);
        Assert.Equal(1, longs["inferpool.items.failed"]);
        Assert.True(longs["inferpool.batches"] >= 10);
        Assert.Equal(0, longs["inferpool.in_flight"]);
        Assert.Equal(0, longs["inferpool.queue.depth"]);
        Assert.True(histogramCounts["inferpool.batch.size"] >= 10);
        Assert.True(histogramCounts["inferpool.batch.duration"] >= 10);
        Assert.Equal(99, histogramCounts["inferpool.item.latency"]);

        var snapshot = monitor.Snapshot();
        Assert.Equal(99, snapshot.Succeeded);
        Assert.Equal(1, snapshot.Failed);
        Assert.Equal(0, snapshot.InFlight);
        var cpu = Assert.Single(snapshot.Devices);
        Assert.Equal(100, cpu.Items);
        Assert.Equal(0, cpu.ReplicasAlive);
    }

    [Fact]
    public async Task Cancel_MidJob_LeavesNothingCountedInFlightOrQueued()
    {
        long inFlight = 0;
        long queued = 0;
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == InferPoolMetrics.MeterName && instrument.Name is "inferpool.in_flight" or "inferpool.queue.depth")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
            Interlocked.Add(ref instrument.Name == "inferpool.in_flight" ? ref inFlight : ref queued, value));
        listener.Start();

        using var cts = new CancellationTokenSource();
        var taken = 0;
        var run = InferencePool.RunAsync(
            Enumerable.Range(0, 100_000),
            _ => 0,
            (_, batch, _) => batch,
            new InferencePoolOptions { Replicas = Plan(("cpu", 2)), MaxBatchSize = 8 },
            cts.Token);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in run)
            {
                if (++taken == 1000)
                {
                    await cts.CancelAsync();
                }
            }
        }).WaitAsync(Bound);

        Assert.Equal((0L, 0L), (Interlocked.Read(ref inFlight), Interlocked.Read(ref queued)));
    }
}
