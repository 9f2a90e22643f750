using System.ComponentModel;
using System.Globalization;
using InferPool.Cli.Cluster;
using Npgsql;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>The arguments of <c>inferpool status</c> and <c>inferpool cancel</c>.</summary>
internal class ClusterJobSettings : CommandSettings
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
internal sealed class StatusCommand : AsyncCommand<ClusterJobSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, ClusterJobSettings settings, CancellationToken cancellationToken)
    {
        try
        {
            await using var database = NpgsqlDataSource.Create(settings.Cluster);
            await ClusterSchema.EnsureAsync(database, cancellationToken);
            var store = new ClusterStore(database);
            var ids = settings.Job is { } one ? [one] : await store.JobIdsAsync(cancellationToken);
            foreach (var id in ids)
            {
                var progress = await store.ProgressAsync(id, cancellationToken);
                if (progress is null)
                {
                    Console.Error.WriteLine($"inferpool: there is no job '{id}' in this cluster.");
                    return ExitCodes.JobFailed;
                }

                AnsiConsole.Console.WriteLine(Describe(progress));
            }

            return ExitCodes.Ok;
        }
        catch (NpgsqlException ex)
        {
            Console.Error.WriteLine($"inferpool: the cluster database is not reachable: {ex.Message}");
            return ExitCodes.JobFailed;
        }
    }

    internal static string Describe(JobProgress p) => string.Create(
        CultureInfo.InvariantCulture,
        $"{p.JobId}: {(p.Finished ? "done" : p.State)}, {p.Done}/{p.Shards} shards committed ({p.Leased} leased), {p.Committed}/{p.TotalItems} items, {p.Failed} failed");
}

/// <summary><c>inferpool cancel JOB</c>: no more shards are handed out; a shard being committed still lands.</summary>
internal sealed class CancelCommand : AsyncCommand<ClusterJobSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, ClusterJobSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Job is null)
        {
            Console.Error.WriteLine("inferpool: cancel needs the job id.");
            return ExitCodes.JobFailed;
        }

        try
        {
            await using var database = NpgsqlDataSource.Create(settings.Cluster);
            await ClusterSchema.EnsureAsync(database, cancellationToken);
            var cancelled = await new ClusterStore(database).CancelAsync(settings.Job, cancellationToken);
            AnsiConsole.Console.WriteLine(cancelled ? $"Cancelled {settings.Job}." : $"{settings.Job} is not running (unknown, finished or already cancelled).");
            return cancelled ? ExitCodes.Ok : ExitCodes.JobFailed;
        }
        catch (NpgsqlException ex)
        {
            Console.Error.WriteLine($"inferpool: the cluster database is not reachable: {ex.Message}");
            return ExitCodes.JobFailed;
        }
    }
}
