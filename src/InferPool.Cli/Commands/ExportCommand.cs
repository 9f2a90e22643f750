using System.ComponentModel;
using System.Globalization;
using InferPool.Cluster;
using InferPool.Jobs.Parts;
using InferPool.Onnx.Tensors;
using Npgsql;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>The arguments of <c>inferpool export</c>.</summary>
internal sealed class ExportSettings : CommandSettings
{
    [CommandArgument(0, "<JOB>")]
    [Description("The cluster job to export (as run --cluster printed it).")]
    public string Job { get; init; } = "";

    [CommandOption("--cluster <CONNECTION>")]
    [Description("The cluster's PostgreSQL connection string.")]
    public string Cluster { get; init; } = "";

    [CommandOption("-o|--output <DIR>")]
    [Description("The output folder: parts and a journal, as a local run writes them. Default: JOB-out")]
    public string? Output { get; init; }

    [CommandOption("--format <FORMAT>")]
    [Description("parquet or jsonl.")]
    [DefaultValue("parquet")]
    public string Format { get; init; } = "parquet";

    [CommandOption("--part-rows <N>")]
    [Description("Rows per part file.")]
    [DefaultValue(10_000)]
    public int PartRows { get; init; } = 10_000;

    [CommandOption("--force")]
    [Description("Start the export over, discarding what an earlier export of this job wrote to the folder.")]
    public bool Force { get; init; }

    public override ValidationResult Validate() =>
        string.IsNullOrWhiteSpace(Cluster) ? ValidationResult.Error("--cluster is required: the PostgreSQL connection string the nodes share.")
        : Format is not ("parquet" or "jsonl") ? ValidationResult.Error($"--format '{Format}' is not supported: use parquet or jsonl.")
        : PartRows < 1 ? ValidationResult.Error($"--part-rows is {PartRows}; it must be at least 1.")
        : ValidationResult.Success();
}

/// <summary>
/// <c>inferpool export JOB</c>: a finished cluster job's results as parts in a folder, with the columns a local run
/// writes, in item order. Resumable: an export that was stopped goes on after the last part it committed (the
/// journal counts the rows), so every key is written exactly once.
/// </summary>
internal sealed class ExportCommand(IAnsiConsole console, ErrorOutput errors) : AsyncCommand<ExportSettings>
{
    private const int Page = 5_000;

    public override async Task<int> ExecuteAsync(CommandContext context, ExportSettings settings, CancellationToken cancellationToken)
    {
        try
        {
            var store = await ClusterStore.OpenAsync(settings.Cluster, cancellationToken).ConfigureAwait(false);
            await using var database = store.Database.ConfigureAwait(false);
            if (await store.JobAsync(settings.Job, cancellationToken).ConfigureAwait(false) is not { } job
                || await store.ProgressAsync(settings.Job, cancellationToken).ConfigureAwait(false) is not { } progress)
            {
                return errors.Fail($"there is no job '{settings.Job}' in this cluster.");
            }

            if (!progress.Finished)
            {
                // Only a finished job's items are 0 … n-1 each committed once, which is what makes the export resumable by row count.
                return errors.Fail($"{ClusterFollow.Describe(progress)}. Only a finished job is exported; follow it with 'inferpool status {job.Id}'.");
            }

            var format = OutputFormat.Parse(settings.Format);
            var output = Path.GetFullPath(settings.Output ?? $"{job.Id}-out");
            // The columns a local run of the job's engine writes, as the first node that loaded it recorded them.
            var columns = job.Columns is { } stored ? ClusterColumns.Parse(stored) : [new OutputColumn("output")];
            var identity = new JobIdentity(job.Worker ?? job.Model, $"cluster job {job.Id}", job.Input, format.Name, [.. columns.Select(c => c.ToString())]);
            using var start = await OutputFolder.OpenAsync(output, identity, settings.Force, requireResume: false, format, cancellationToken).ConfigureAwait(false);
            var writer = new PartWriter(output, start.Journal, format, columns, settings.PartRows);
            var next = start.Journal.CommittedRows;
            var resumedAt = next;
            while (next < progress.TotalItems)
            {
                var page = await store.ResultsAsync(job.Id, next, Page, cancellationToken).ConfigureAwait(false);
                if (page.Count == 0 || page[0].Index != next)
                {
                    return errors.Fail($"item {next} of {job.Id} has no committed result; the job's results are incomplete.");
                }

                foreach (var r in page)
                {
                    if (r.Index != next)
                    {
                        return errors.Fail($"item {next} of {job.Id} has no committed result; the job's results are incomplete.");
                    }

                    await writer.AddAsync(Row(r), cancellationToken).ConfigureAwait(false);
                    next++;
                }
            }

            await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
            start.Journal.Finished = true;
            await start.Journal.SaveAsync(output, cancellationToken).ConfigureAwait(false);
            console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"Exported {job.Id}: {progress.TotalItems} items ({progress.Failed} failed){(resumedAt > 0 ? $", going on after the {resumedAt} already exported" : "")} to {output} ({start.Journal.Parts.Count} {format.Name} part(s); columns key, status, error, {string.Join(", ", columns.Select(c => c.Name))}, device, replica (the node), attempts (0: the cluster does not record them))."));
            return ExitCodes.Ok;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            errors.Writer.WriteLine("inferpool: export stopped; run it again to go on from the last part written.");
            return ExitCodes.Interrupted;
        }
        catch (JobFolderException ex)
        {
            return errors.Fail($"{ex.Message} Use --force to export into it anyway, or another -o.");
        }
        catch (NpgsqlException ex)
        {
            return errors.Fail($"the cluster database is not reachable: {ex.Message}");
        }
    }

    private static ResultRow Row(CommittedResult r) => new()
    {
        Key = r.Key,
        Index = r.Index,
        Ok = r.Ok,
        Error = r.Error,
        Outputs = r.Outputs ?? (r.Vector is { } v ? [TensorData.Create(v, v.Length)] : null),
        Json = r.Json,
        Device = r.Device,
        Replica = r.Node,
        Attempts = 0,
    };
}
