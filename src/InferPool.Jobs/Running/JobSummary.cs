using InferPool.Diagnostics;

namespace InferPool.Jobs;

/// <summary>What a run did: counts, speed, where it ran, what failed and why, where the output is.</summary>
public sealed record JobSummary
{
    /// <summary>How many failures <see cref="FirstFailures"/> lists at most.</summary>
    public const int FailuresListed = 20;

    /// <summary>Items this run processed.</summary>
    public long Items { get; init; }

    /// <summary>Items of this run that failed.</summary>
    public long Failed { get; init; }

    /// <summary>Items that ran but were cut to fit the model (texts over the token limit).</summary>
    public long Truncated { get; init; }

    /// <summary>How long the run took.</summary>
    public TimeSpan Elapsed { get; init; }

    /// <summary>The pool's counters at the end: per device items, busy time, faults.</summary>
    public required PoolSnapshot Final { get; init; }

    /// <summary>The parts this run committed, as full paths.</summary>
    public IReadOnlyList<string> Parts { get; init; } = [];

    /// <summary>The first failures, with their reasons.</summary>
    public IReadOnlyList<(string Key, string Reason)> FirstFailures { get; init; } = [];

    /// <summary>Failures counted by kind (an exception type, or <c>InvalidOutput</c>).</summary>
    public IReadOnlyDictionary<string, int> FailuresByReason { get; init; } = new Dictionary<string, int>();

    /// <summary>What each replica took.</summary>
    public IReadOnlyCollection<ReplicaUsage> Replicas { get; init; } = [];

    /// <summary>The run stopped taking input because it was asked to (the job is resumable).</summary>
    public bool Interrupted { get; init; }

    /// <summary>Items skipped because an earlier run committed them.</summary>
    public long Skipped { get; init; }

    /// <summary>An earlier run of the same job was found and resumed.</summary>
    public bool Resumed { get; init; }

    /// <summary>Leftover files (torn or uncommitted parts) that were removed.</summary>
    public int Discarded { get; init; }

    /// <summary>The run stopped at its first failure (<see cref="JobOptions.FailFast"/>).</summary>
    public bool StoppedOnFailure { get; init; }

    /// <summary>Failed rows among the parts earlier runs committed.</summary>
    public long FailedEarlier { get; init; }

    /// <summary>The job was already complete: nothing ran.</summary>
    public bool AlreadyComplete { get; init; }

    /// <summary>GPU utilisation and memory sampled during the run.</summary>
    public IReadOnlyList<GpuUsage> Gpus { get; init; } = [];

    /// <summary>Notes from the pool worth a line in a summary: replica caps, halved batches, removed devices.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>
    /// When each step of the run was reached, from the start of <see cref="InferenceJob.RunAsync(CancellationToken)"/>:
    /// the output folder ready, the engine session open, each replica started, the first and last result, the parts
    /// written. Start-up is the time to the first result; the replicas' busy share counts from the session on.
    /// </summary>
    public IReadOnlyList<JobPhase> Phases { get; init; } = [];

    /// <summary>Items per second over the run.</summary>
    public double ItemsPerSecond => Elapsed.TotalSeconds > 0 ? Items / Elapsed.TotalSeconds : 0;

    /// <summary>Failed items of the whole job, this run's and earlier runs'.</summary>
    public long FailedInJob => Failed + FailedEarlier;
}

/// <summary>A step of a job's run and when it was reached.</summary>
/// <param name="Name">What was reached, e.g. <c>first result</c> or <c>replica cpu#0 started</c>.</param>
/// <param name="At">Time since the run began.</param>
public sealed record JobPhase(string Name, TimeSpan At);
