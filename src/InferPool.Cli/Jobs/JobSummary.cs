using InferPool.Diagnostics;

namespace InferPool.Cli.Jobs;

/// <summary>What a run did: counts, speed, where it ran, what failed and why, where the output is.</summary>
internal sealed record JobSummary(
    long Items,
    long Failed,
    TimeSpan Elapsed,
    PoolSnapshot Final,
    IReadOnlyList<string> Parts,
    IReadOnlyList<(string Key, string Reason)> FirstFailures,
    IReadOnlyDictionary<string, int> FailuresByReason,
    IReadOnlyCollection<ReplicaUsage> Replicas,
    bool Interrupted,
    long Skipped = 0,
    bool Resumed = false,
    int Discarded = 0,
    bool StoppedOnFailure = false,
    long FailedEarlier = 0,
    bool AlreadyComplete = false,
    IReadOnlyList<GpuUsage>? Gpus = null,
    IReadOnlyList<string>? Notes = null)
{
    public const int FailuresListed = 20;

    public double ItemsPerSecond => Elapsed.TotalSeconds > 0 ? Items / Elapsed.TotalSeconds : 0;
}
