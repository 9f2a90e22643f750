using System.Diagnostics;
using System.Globalization;
using InferPool.Cluster;

namespace InferPool.Cli.Commands;

/// <summary>
/// Following a cluster job until it ends, for <c>run --cluster</c> and <c>status JOB --follow</c>: a line whenever its
/// progress changes, then the exit code its final state calls for.
/// </summary>
internal static class ClusterFollow
{
    /// <summary>The least time between two looks at a job's progress.</summary>
    private static readonly TimeSpan MinimumLook = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Looks at the job whenever the database signals that its progress changed (a shard committed, failed, handed
    /// back; the job cancelled), and at least every second, until it is done, failed or cancelled. A line is written
    /// when the progress changed, at most one a second until the last.
    /// </summary>
    /// <returns>0 when every item succeeded, 1 when some failed, 2 when the job failed, 130 when it was cancelled.</returns>
    public static async Task<int> FollowAsync(ClusterStore store, string jobId, TextWriter output, ErrorOutput errors, bool quiet, CancellationToken cancellationToken)
    {
        var signals = ClusterSignals.ForProgress(store.Database);
        await using (signals.ConfigureAwait(false))
        {
            string? last = null;
            var written = DateTime.MinValue;
            while (true)
            {
                // Taken before looking, so that a commit while this looks is not missed.
                var changed = signals.Next(jobId);
                var looked = Stopwatch.StartNew();
                var progress = await store.ProgressAsync(jobId, cancellationToken).ConfigureAwait(false) ?? throw new InvalidOperationException($"Job {jobId} disappeared from the database.");
                var ended = progress.Finished || progress.Unaccounted || progress.State is "failed" or "cancelled";
                if (!quiet && (ended || DateTime.UtcNow - written >= TimeSpan.FromSeconds(1)))
                {
                    var line = Describe(progress, ended ? null : await store.ActivityAsync(jobId, cancellationToken).ConfigureAwait(false));
                    if (line != last)
                    {
                        output.WriteLine(line);
                        (last, written) = (line, DateTime.UtcNow);
                    }
                }

                if (progress.Finished)
                {
                    return progress.Failed > 0 ? ExitCodes.ItemsFailed : ExitCodes.Ok;
                }

                if (progress.State == "failed" || progress.Unaccounted)
                {
                    errors.Writer.WriteLine(progress.State == "failed"
                        ? $"inferpool: {jobId} failed: {progress.Error}; {progress.Committed} of {progress.TotalItems} items are committed."
                        : $"inferpool: {jobId} ended with {progress.TotalItems - progress.Committed} of its {progress.TotalItems} items unaccounted for.");
                    return ExitCodes.JobFailed;
                }

                if (progress.State == "cancelled")
                {
                    errors.Writer.WriteLine($"inferpool: {jobId} was cancelled; {progress.Committed} items are committed.");
                    return ExitCodes.Interrupted;
                }

                await ClusterSignals.WaitAsync(changed, TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);

                // A big job commits many shards a second: look at most ten times a second (the query is O(shards)).
                if (looked.Elapsed < MinimumLook)
                {
                    await Task.Delay(MinimumLook - looked.Elapsed, cancellationToken).ConfigureAwait(false);
                }
            }
        }
    }

    /// <summary>What to say when the user stops following: the job is not stopped.</summary>
    public static string StoppedFollowing(string jobId) =>
        $"inferpool: stopped following {jobId}; it goes on in the cluster. Follow it again with 'inferpool status {jobId} --follow --cluster …', stop it with 'inferpool cancel {jobId} --cluster …'.";

    /// <summary>
    /// One line of a job's state: its final state (<c>done</c>, <c>done with failures</c>, <c>failed</c>,
    /// <c>cancelled</c>) or its progress with rate and time left, and what each node is doing.
    /// </summary>
    public static string Describe(JobProgress p, JobActivity? activity = null)
    {
        var state = p.Finished ? (p.Failed > 0 ? "done with failures" : "done") : p.Unaccounted ? "incomplete" : p.State;
        var line = string.Create(
            CultureInfo.InvariantCulture,
            $"{p.JobId}: {state}, {p.Done}/{p.Shards} shards committed ({p.Leased} leased), {p.Committed}/{p.TotalItems} items, {p.Failed} failed{(p.Error is { } error ? $": {error}" : "")}");
        if (activity is null || p.State != "running" || p.Finished)
        {
            return line;
        }

        var left = p.TotalItems - p.Committed;
        var rate = activity.ItemsPerSecond > 0
            ? string.Create(CultureInfo.InvariantCulture, $"; {activity.ItemsPerSecond:0.#} items/s over the last minute, about {TimeSpan.FromSeconds(Math.Ceiling(left / activity.ItemsPerSecond)):g} left")
            : "";
        var nodes = activity.Leases.Count == 0
            ? ""
            : "; " + string.Join(", ", activity.Leases.Select(l => string.Create(CultureInfo.InvariantCulture, $"{l.Node} on shard {l.Shard} (items {l.First}+{l.Count})")));
        return line + rate + nodes;
    }
}
