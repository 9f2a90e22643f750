using System.Diagnostics.Metrics;

namespace InferPool.Diagnostics;

/// <summary>
/// The library's instruments, under the meter <c>InferPool</c> (see <see cref="MeterName"/>):
/// <list type="table">
/// <item><term><c>inferpool.items</c></term><description>counter; items finished, tagged <c>status</c> (ok, failed) and <c>device</c></description></item>
/// <item><term><c>inferpool.batches</c></term><description>counter; batch calls completed, tagged <c>device</c></description></item>
/// <item><term><c>inferpool.batch.size</c></term><description>histogram; items per batch call</description></item>
/// <item><term><c>inferpool.batch.duration</c></term><description>histogram (ms); time in a batch call, tagged <c>device</c></description></item>
/// <item><term><c>inferpool.item.latency</c></term><description>histogram (ms); from admission to result</description></item>
/// <item><term><c>inferpool.in_flight</c></term><description>up-down counter; items admitted and not yet handed out</description></item>
/// <item><term><c>inferpool.queue.depth</c></term><description>up-down counter; batches waiting for a replica</description></item>
/// <item><term><c>inferpool.replica.faults</c></term><description>counter; replicas broken or hung, tagged <c>device</c></description></item>
/// </list>
/// </summary>
public static class InferPoolMetrics
{
    /// <summary>The meter's name: <c>InferPool</c>.</summary>
    public const string MeterName = "InferPool";

    private static readonly Meter Meter = new(MeterName, typeof(InferPoolMetrics).Assembly.GetName().Version?.ToString());

    internal static readonly Counter<long> Items = Meter.CreateCounter<long>("inferpool.items", "{item}", "Items finished.");
    internal static readonly Counter<long> Batches = Meter.CreateCounter<long>("inferpool.batches", "{batch}", "Batch calls completed.");
    internal static readonly Histogram<int> BatchSize = Meter.CreateHistogram<int>("inferpool.batch.size", "{item}", "Items per batch call.");
    internal static readonly Histogram<double> BatchDuration = Meter.CreateHistogram<double>("inferpool.batch.duration", "ms", "Time in a batch call.");
    internal static readonly Histogram<double> ItemLatency = Meter.CreateHistogram<double>("inferpool.item.latency", "ms", "From admission to result.");
    internal static readonly UpDownCounter<long> InFlight = Meter.CreateUpDownCounter<long>("inferpool.in_flight", "{item}", "Items admitted and not yet handed out.");
    internal static readonly UpDownCounter<long> QueueDepth = Meter.CreateUpDownCounter<long>("inferpool.queue.depth", "{batch}", "Batches waiting for a replica.");
    internal static readonly Counter<long> ReplicaFaults = Meter.CreateCounter<long>("inferpool.replica.faults", "{fault}", "Replicas broken or hung.");
}
