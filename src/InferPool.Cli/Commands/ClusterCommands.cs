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

    [CommandOption("--follow")]
    [Description("status: keep watching the job until it ends (the exit code then says how it ended, as run --cluster's does).")]
    public bool Follow { get; init; }

    public override ValidationResult Validate() =>
        string.IsNullOrWhiteSpace(Cluster) ? ValidationResult.Error("--cluster is required: the PostgreSQL connection string the nodes share.")
        : Follow && Job is null ? ValidationResult.Error("--follow needs a job id: inferpool status JOB --follow.")
        : ValidationResult.Success();
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

                if (settings.Follow)
                {
                    try
                    {
                        return await ClusterFollow.FollowAsync(store, id, console.Profile.Out.Writer, errors, quiet: false, cancellationToken).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                    {
                        errors.Writer.WriteLine(ClusterFollow.StoppedFollowing(id));
                        return ExitCodes.Interrupted;
                    }
                }

                console.WriteLine(ClusterFollow.Describe(progress, settings.Job is null ? null : await store.ActivityAsync(id, cancellationToken).ConfigureAwait(false)));
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
