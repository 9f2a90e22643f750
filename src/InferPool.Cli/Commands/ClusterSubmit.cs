using System.Globalization;
using InferPool.Cluster;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using Npgsql;

namespace InferPool.Cli.Commands;

/// <summary>
/// <c>inferpool run INPUT --cluster CONNECTION</c>: records a job and its shards in the cluster's database (the
/// nodes pick it up from there) and follows its progress until every shard is committed. Stopping the command
/// does not stop the job: <c>inferpool cancel JOB</c> does.
/// </summary>
internal static class ClusterSubmit
{
    public static async Task<int> RunAsync(RunSettings settings, TextWriter output, ErrorOutput errors, CancellationToken cancellationToken)
    {
        var inputPath = Path.GetFullPath(settings.Input ?? ToolFiles.SampleImages);
        var model = settings.Model ?? ModelChoice.BuiltInName;
        // Every node resolves the model itself: the built-in name, or a path every node can read; or it starts
        // the worker command, which must work on every node.
        var modelForNodes = settings.Worker is not null ? "worker"
            : string.Equals(model, ModelChoice.BuiltInName, StringComparison.OrdinalIgnoreCase) ? ModelChoice.BuiltInName
            : Path.GetFullPath(model);
        try
        {
            var input = InputSource.Open(inputPath, forWorker: settings.Worker is not null);
            if (settings.Worker is null)
            {
                ModelChoice.Resolve(modelForNodes);
            }

            input.CheckKeysUnique();
            var file = File.Exists(inputPath) ? new FileInfo(inputPath) : null;
            var job = new ClusterJob(
                settings.Job ?? string.Create(CultureInfo.InvariantCulture, $"job-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Random.Shared.Next(0x10000):x4}"),
                inputPath,
                modelForNodes,
                settings.Batch ?? 1,
                settings.ShardSize,
                0,
                settings.LeaseSeconds,
                "running",
                settings.Worker)
            {
                InputSize = file?.Length,
                InputModified = file?.LastWriteTimeUtc,
            };

            var store = await ClusterStore.OpenAsync(settings.Cluster!, cancellationToken).ConfigureAwait(false);
            await using var database = store.Database.ConfigureAwait(false);

            // The job's items are fixed here, in the manifest: the nodes run exactly these, and the job is done only
            // when every one of them is accounted for.
            long total;
            try
            {
                total = await store.CreateJobAsync(job, Manifest(input, cancellationToken), cancellationToken).ConfigureAwait(false);
            }
            catch (ArgumentException) when (!input.ReadAsync(cancellationToken).ToBlockingEnumerable(cancellationToken).Any())
            {
                return errors.Fail($"{input.Description} holds no inputs; nothing was submitted.");
            }

            output.WriteLine($"Submitted {job.Id}: {total} items of {input.Description} in {(total + job.ShardSize - 1) / job.ShardSize} shards of up to {job.ShardSize}, {(settings.Worker is null ? $"model {modelForNodes}" : $"worker '{settings.Worker}'")}. Results go to the table inferpool_results (job_id = '{job.Id}').");
            if (settings.Detach)
            {
                return ExitCodes.Ok;
            }

            string? last = null;
            while (true)
            {
                var progress = await store.ProgressAsync(job.Id, cancellationToken).ConfigureAwait(false) ?? throw new InvalidOperationException($"Job {job.Id} disappeared from the database.");
                var line = StatusCommand.Describe(progress);
                if (line != last && !settings.Quiet)
                {
                    output.WriteLine(line);
                    last = line;
                }

                if (progress.Finished)
                {
                    return progress.Failed > 0 ? ExitCodes.ItemsFailed : ExitCodes.Ok;
                }

                if (progress.State == "failed" || progress.Unaccounted)
                {
                    errors.Writer.WriteLine(progress.State == "failed"
                        ? $"inferpool: {job.Id} failed: {progress.Error}; {progress.Committed} of {progress.TotalItems} items are committed."
                        : $"inferpool: {job.Id} ended with {progress.TotalItems - progress.Committed} of its {progress.TotalItems} items unaccounted for.");
                    return ExitCodes.JobFailed;
                }

                if (progress.State == "cancelled")
                {
                    errors.Writer.WriteLine($"inferpool: {job.Id} was cancelled; {progress.Committed} items are committed.");
                    return ExitCodes.Interrupted;
                }

                await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            errors.Writer.WriteLine("inferpool: stopped following the job; it goes on in the cluster ('inferpool status' shows it, 'inferpool cancel' stops it).");
            return ExitCodes.Interrupted;
        }
        catch (DuplicateKeyException ex)
        {
            return errors.Fail($"{ex.Message} Keys must be unique in a cluster job; nothing was submitted.");
        }
        catch (Exception ex) when (ex is FileNotFoundException or NpgsqlException or InvalidOperationException or IOException)
        {
            return errors.Fail(ex.Message);
        }
    }

    /// <summary>The input's items as the submitter finds them now, with each file's size and time (a folder's or a list's items).</summary>
    private static async IAsyncEnumerable<ManifestItem> Manifest(InputSource input, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var seen = input.KeysAreUnique ? null : new Dictionary<string, long>(StringComparer.Ordinal);
        long index = 0;
        await foreach (var item in input.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            if (seen is not null && !seen.TryAdd(item.Key, index))
            {
                throw new DuplicateKeyException(item.Key, $"item {seen[item.Key]} of {input.Description}", $"item {index}");
            }

            var file = input.ItemsAreFiles && item.Path is { } path ? new FileInfo(path) : null;
            yield return file is { Exists: true }
                ? new ManifestItem(index, item.Key, file.FullName, file.Length, file.LastWriteTimeUtc)
                : new ManifestItem(index, item.Key, file?.FullName, null, null);
            index++;
        }
    }
}
