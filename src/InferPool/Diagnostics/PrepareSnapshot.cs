namespace InferPool.Diagnostics;

/// <summary>A job's prepare stage and queues at one moment: whether preparation keeps the replicas fed.</summary>
/// <param name="Workers">Prepare workers running now; the others are parked until the replicas wait on preparation.</param>
/// <param name="WorkerLimit">The most that may run (<see cref="InferencePoolOptions.PrepareParallelism"/>).</param>
/// <param name="MostWorkers">The most that ran at once.</param>
/// <param name="PreparedWaiting">Prepared items waiting to be batched now (the queue holds at most max(2 × batch, 16)).</param>
/// <param name="BatchesWaiting">Batches waiting for a replica now.</param>
/// <param name="ReplicaWaits">Times a started replica found nothing to run and nothing prepared.</param>
/// <param name="ReplicaWaitTime">The time replicas spent in those waits, all replicas together.</param>
/// <param name="QueueFull">Times preparation was ahead: a worker found the prepared-items queue full and waited.</param>
public sealed record PrepareSnapshot(
    int Workers,
    int WorkerLimit,
    int MostWorkers,
    int PreparedWaiting,
    int BatchesWaiting,
    long ReplicaWaits,
    TimeSpan ReplicaWaitTime,
    long QueueFull);
