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
        var inputPath = Path.GetFullPath(settings.Input ?? (settings.IsText ? ToolFiles.SampleTexts : ToolFiles.SampleImages));
        var model = settings.Model ?? (settings.IsText ? TextEngine.BuiltInName : ModelChoice.BuiltInName);
        // Every node resolves the model itself: a built-in name, or a path every node can read; or it starts
        // the worker command, which must work on every node.
        var modelForNodes = settings.Worker is not null ? (settings.WorkerOutput == "json" ? ClusterJob.WorkerJson : ClusterJob.WorkerVector)
            : string.Equals(model, ModelChoice.BuiltInName, StringComparison.OrdinalIgnoreCase) ? ModelChoice.BuiltInName
            : TextEngine.IsBuiltIn(model) ? TextEngine.BuiltInName
            : Path.GetFullPath(model);
        try
        {
            var (input, engine) = OpenInput(settings, inputPath, modelForNodes, errors);
            var engineOptions = EngineOptions(settings, engine);
            input.CheckKeysUnique();
            var file = File.Exists(inputPath) ? new FileInfo(inputPath) : null;
            var job = new ClusterJob(
                settings.Job ?? string.Create(CultureInfo.InvariantCulture, $"job-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Random.Shared.Next(0x10000):x4}"),
                inputPath,
                modelForNodes,
                settings.Batch ?? (settings.IsText ? TextEngine.DefaultBatch : 1),
                settings.ShardSize,
                0,
                settings.LeaseSeconds,
                "running",
                settings.Worker)
            {
                InputSize = file?.Length,
                InputModified = file?.LastWriteTimeUtc,
                Engine = engineOptions,
            };

            var store = await ClusterStore.OpenAsync(settings.Cluster!, cancellationToken).ConfigureAwait(false);
            await using var database = store.Database.ConfigureAwait(false);

            // The same --job again: follow it, if it is the same job; another job under that id is refused.
            if (settings.Job is not null && await store.JobAsync(settings.Job, cancellationToken).ConfigureAwait(false) is { } existing)
            {
                if (Difference(existing, job) is { } difference)
                {
                    return errors.Fail($"a job '{existing.Id}' already exists in this cluster, and {difference}. Choose another --job id, or leave --job out for a new one.");
                }

                output.WriteLine($"Reattached to {existing.Id}: {existing.TotalItems} items of {existing.Input}.");
                return settings.Detach ? ExitCodes.Ok : await FollowAsync(store, existing.Id, settings, output, errors, cancellationToken).ConfigureAwait(false);
            }

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

            return await FollowAsync(store, job.Id, settings, output, errors, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            errors.Writer.WriteLine("inferpool: stopped; a job already submitted goes on in the cluster ('inferpool status --cluster …' lists the jobs).");
            return ExitCodes.Interrupted;
        }
        catch (DuplicateKeyException ex)
        {
            return errors.Fail($"{ex.Message} Keys must be unique in a cluster job; nothing was submitted.");
        }
        catch (Exception ex) when (ex is FileNotFoundException or NpgsqlException or InvalidOperationException or IOException or InvalidDataException or ArgumentException or NotSupportedException or Microsoft.ML.OnnxRuntime.OnnxRuntimeException)
        {
            return errors.Fail(ex.Message);
        }
    }

    /// <summary>
    /// The input as a local run of the same command opens it. A text model, a table, or padding needs the model here
    /// too: it is loaded once, so that a missing tokenizer, an unknown input or a column not in the table is refused
    /// before anything is submitted, and a table's columns are mapped to the model's inputs as the nodes will read them.
    /// An image or record model is only checked to exist.
    /// </summary>
    private static (InputSource Input, JobEngine? Engine) OpenInput(RunSettings settings, string inputPath, string model, ErrorOutput errors)
    {
        JobEngine? engine = null;
        if (settings.Worker is null)
        {
            var logger = new ConsoleLogger(errors.Writer, Microsoft.Extensions.Logging.LogLevel.Warning);
            if (settings.IsText)
            {
                engine = RunCommand.LoadTextModel(settings, logger);
            }
            else if (InputSource.IsTable(inputPath) || settings.Pad.Length > 0 || settings.MaxBatchTokens is not null)
            {
                engine = RunCommand.LoadModel(model, logger, settings.Pad, settings.MaxBatchTokens);
            }
            else
            {
                ModelChoice.Resolve(model);
            }
        }

        return RunCommand.OpenInput(settings, engine);
    }

    /// <summary>What the nodes need besides the model, from the command line and the engine the input was opened for.</summary>
    private static ClusterEngineOptions EngineOptions(RunSettings settings, JobEngine? engine) => new()
    {
        Text = settings.IsText,
        Tokenizer = settings.Tokenizer is { } tokenizer ? Path.GetFullPath(tokenizer) : null,
        Pooling = settings.Pooling,
        MaxTokens = settings.MaxTokens,
        MaxBatchTokens = settings.MaxBatchTokens,
        TextColumn = settings.TextColumn,
        KeyColumn = settings.Key,
        InputColumns = (engine as OnnxEngine)?.InputColumns,
        Pad = engine is OnnxEngine { TensorBatching.PadValues.Count: > 0 } onnx ? onnx.TensorBatching.PadValues : null,
    };

    /// <summary>
    /// The input's items as the submitter finds them now, with each file's size and time (a folder's or a list's
    /// items). Keys that may repeat are checked in a <see cref="KeyHashSet"/> (memory that does not grow with the
    /// input); on a repeat the input is read again for the first item with that key, to name both.
    /// </summary>
    private static async IAsyncEnumerable<ManifestItem> Manifest(InputSource input, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var seen = input.KeysAreUnique ? null : new KeyHashSet(Path.GetTempPath());
        long index = 0;
        await foreach (var item in input.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            if (seen is not null && !seen.Add(KeyHashSet.Hash(item.Key)))
            {
                var first = await FirstIndexOfAsync(input, item.Key, cancellationToken).ConfigureAwait(false);
                throw new DuplicateKeyException(item.Key, $"item {first} of {input.Description}", $"item {index}");
            }

            var file = input.ItemsAreFiles && item.Path is { } path ? new FileInfo(path) : null;
            yield return (file is { Exists: true }
                ? new ManifestItem(index, item.Key, file.FullName, file.Length, file.LastWriteTimeUtc)
                : new ManifestItem(index, item.Key, file?.FullName, null, null)) with { Position = item.Position };
            index++;
        }
    }

    private static async Task<long> FirstIndexOfAsync(InputSource input, string key, CancellationToken cancellationToken)
    {
        long index = 0;
        await foreach (var item in input.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            if (item.Key == key)
            {
                return index;
            }

            index++;
        }

        return -1;
    }

    private static async Task<int> FollowAsync(ClusterStore store, string jobId, RunSettings settings, TextWriter output, ErrorOutput errors, CancellationToken cancellationToken)
    {
        try
        {
            return await ClusterFollow.FollowAsync(store, jobId, output, errors, settings.Quiet, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            errors.Writer.WriteLine(ClusterFollow.StoppedFollowing(jobId));
            return ExitCodes.Interrupted;
        }
    }

    /// <summary>How <paramref name="wanted"/> differs from the stored job of the same id, or null when it is the same job.</summary>
    private static string? Difference(ClusterJob stored, ClusterJob wanted) =>
        stored.Input != wanted.Input ? $"it runs on {stored.Input}, not {wanted.Input}"
        : stored.Model != wanted.Model ? $"it runs model {stored.Model}, not {wanted.Model}"
        : stored.Worker != wanted.Worker ? $"it runs {(stored.Worker is null ? "no worker" : $"worker '{stored.Worker}'")}, not {(wanted.Worker is null ? "no worker" : $"worker '{wanted.Worker}'")}"
        : stored.Batch != wanted.Batch ? $"its batch is {stored.Batch}, not {wanted.Batch}"
        : stored.ShardSize != wanted.ShardSize ? $"its shards hold {stored.ShardSize} items, not {wanted.ShardSize}"
        : stored.Engine.ToJson() != wanted.Engine.ToJson() ? $"it runs with the engine options {stored.Engine.ToJson()}, not {wanted.Engine.ToJson()}"
        : null;
}
