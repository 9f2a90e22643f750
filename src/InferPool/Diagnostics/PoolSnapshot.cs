namespace InferPool.Diagnostics;

/// <summary>A job's progress at one moment.</summary>
/// <param name="Elapsed">Time since the job started.</param>
/// <param name="Admitted">Items taken from the input.</param>
/// <param name="Succeeded">Items with a value.</param>
/// <param name="Failed">Items that failed.</param>
/// <param name="InFlight">Items admitted whose results the caller has not received yet.</param>
/// <param name="PeakInFlight">The highest <paramref name="InFlight"/> seen.</param>
/// <param name="ItemsPerSecond">Finished items over elapsed time.</param>
/// <param name="Devices">Each device's share.</param>
public sealed record PoolSnapshot(
    TimeSpan Elapsed,
    long Admitted,
    long Succeeded,
    long Failed,
    long InFlight,
    long PeakInFlight,
    double ItemsPerSecond,
    IReadOnlyList<DeviceSnapshot> Devices)
{
    /// <summary>The prepare stage and queues; null for a job without a prepare stage, or before it starts.</summary>
    public PrepareSnapshot? Prepare { get; init; }

    /// <summary>Items finished, ok or failed.</summary>
    public long Completed => Succeeded + Failed;
}
