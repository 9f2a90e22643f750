using InferPool.Devices;

namespace InferPool.Diagnostics;

/// <summary>One device's share of a job so far.</summary>
/// <param name="Device">The device.</param>
/// <param name="ReplicasPlanned">Replicas planned on it.</param>
/// <param name="ReplicasAlive">Replicas built and working now.</param>
/// <param name="Items">Items it finished (ok or failed by the model).</param>
/// <param name="Batches">Batch calls it completed.</param>
/// <param name="ItemsPerSecond">Items over the job's elapsed time.</param>
/// <param name="BusyFraction">Time its replicas spent in batch calls, over elapsed time × replicas planned (0 to 1).</param>
/// <param name="Faults">Replica faults (crashes, hangs) on it.</param>
/// <param name="Removed">True when the device was given up.</param>
public sealed record DeviceSnapshot(
    Device Device,
    int ReplicasPlanned,
    int ReplicasAlive,
    long Items,
    long Batches,
    double ItemsPerSecond,
    double BusyFraction,
    int Faults,
    bool Removed);
