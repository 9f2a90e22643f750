using System.ComponentModel;
using System.Globalization;
using InferPool.Cluster;
using Npgsql;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>The arguments of <c>inferpool status</c> and <c>inferpool cancel</c>.</summary>
internal sealed class ClusterJobSettings : CommandSettings
{
    [CommandArgument(0, "[JOB]")]
    [Description("The job id (as run --cluster printed it). status without one lists the latest jobs.")]
    public string? Job { get; init; }

    [CommandOption("--cluster <CONNECTION>")]
    [Description("The cluster's PostgreSQL connection string.")]
    public string Cluster { get; init; } = "";

    public override ValidationResult Validate() =>
        string.IsNullOrWhiteSpace(Cluster) ? ValidationResult.Error("--cluster is required: the PostgreSQL connection string the nodes share.") : ValidationResult.Success();
}

/// <summary><c>inferpool status [JOB]</c>: a job's shards and items, or the latest jobs.</summary>
internal sealed class StatusCommand(IAnsiConsole console, ErrorOutput errors) : AsyncCommand<ClusterJobSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, ClusterJobSettings settings, CancellationToken cancellationToken)
    {
        try
        {
            var store = await ClusterStore.OpenAsync(settings.Cluster, cancellationToken).ConfigureAwait(false);
            await using var database = store.Database.ConfigureAwait(false);
            var ids = settings.Job is { } one ? [one] : await store.JobIdsAsync(cancellationToken).ConfigureAwait(false);
            foreach (var id in ids)
            {
                var progress = await store.ProgressAsync(id, cancellationToken).ConfigureAwait(false);
                if (progress is null)
                {
                    return errors.Fail($"there is no job '{id}' in this cluster.");
                }

                console.WriteLine(Describe(progress));
                foreach (var (node, reason) in await store.RefusalsAsync(id, cancellationToken).ConfigureAwait(false))
                {
                    console.WriteLine($"  refused by {node}: {reason}");
                }
            }

            return ExitCodes.Ok;
        }
        catch (NpgsqlException ex)
        {
            return errors.Fail($"the cluster database is not reachable: {ex.Message}");
        }
    }

    internal static string Describe(JobProgress p) => string.Create(
        CultureInfo.InvariantCulture,
        $"{p.JobId}: {(p.Finished ? "done" : p.Unaccounted ? "incomplete" : p.State)}, {p.Done}/{p.Shards} shards committed ({p.Leased} leased), {p.Committed}/{p.TotalItems} items, {p.Failed} failed{(p.Error is { } error ? $": {error}" : "")}");
}

/// <summary><c>inferpool cancel JOB</c>: no more shards are handed out; a shard being committed still lands.</summary>
internal sealed class CancelCommand(IAnsiConsole console, ErrorOutput errors) : AsyncCommand<ClusterJobSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, ClusterJobSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Job is null)
        {
            return errors.Fail("cancel needs the job id.");
        }

        try
        {
            var store = await ClusterStore.OpenAsync(settings.Cluster, cancellationToken).ConfigureAwait(false);
            await using var database = store.Database.ConfigureAwait(false);
            var cancelled = await store.CancelAsync(settings.Job, cancellationToken).ConfigureAwait(false);
            console.WriteLine(cancelled ? $"Cancelled {settings.Job}." : $"{settings.Job} is not running (unknown, finished or already cancelled).");
            return cancelled ? ExitCodes.Ok : ExitCodes.JobFailed;
        }
        catch (NpgsqlException ex)
        {
            return errors.Fail($"the cluster database is not reachable: {ex.Message}");
        }
    }
}
