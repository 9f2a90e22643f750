using System.Globalization;
using InferPool.Cli.Progress;
using InferPool.Devices;
using InferPool.Jobs;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Parts;
using InferPool.Jobs.Tuning;
using InferPool.Processes;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>
/// <c>inferpool run</c>: maps the settings to a job (model, devices, input, tuned config), runs it with a progress
/// display, prints the summary, and maps the outcome to an exit code.
/// </summary>
internal sealed class RunCommand(IAnsiConsole console, ErrorOutput errors, TimeProvider time, Interrupts interrupts) : AsyncCommand<RunSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, RunSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Cluster is not null)
        {
            return await ClusterSubmit.RunAsync(settings, console.Profile.Out.Writer, errors, cancellationToken).ConfigureAwait(false);
        }

        var logger = new ConsoleLogger(errors.Writer, settings.Verbose ? LogLevel.Information : LogLevel.Warning);
        InferenceJob job;
        JobOptions options;
        TunedConfig? tuned;
        try
        {
            (options, tuned) = Resolve(settings, logger);
            job = new InferenceJob(options, logger, time);
        }
        catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException or NotSupportedException or InvalidOperationException or ArgumentException or IOException or UnauthorizedAccessException or OnnxRuntimeException)
        {
            return errors.Fail(ex.Message);
        }

        using var telemetry = options.GpuTelemetry as IDisposable;
        if (!settings.Quiet)
        {
            console.WriteLine(Describe(options, job, tuned));
        }

        interrupts.DrainWithin(TimeSpan.FromSeconds(settings.DrainTimeoutSeconds));
        using var hardStop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, interrupts.StopNow);
        // The total is counted beside the job, for the progress bar and ETA; until it is known (or if the
        // count fails) progress shows counts without a total.
        long total = -1;
        _ = Task.Run(
            () =>
            {
                try
                {
                    Interlocked.Exchange(ref total, options.Input.Count());
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // The job itself reports unreadable inputs, item by item.
                }
            },
            hardStop.Token);
        try
        {
            var summary = await new ProgressDisplay(console, time, settings.Quiet)
                .RunAsync(() => job.RunAsync(interrupts.StopIntake, hardStop.Token), job.Monitor, () => Interlocked.Read(ref total) is >= 0 and var t ? t : null, () => job.GpuUsage)
                .ConfigureAwait(false);
            new RunSummary(console, errors.Writer).Print(options, summary, interrupts.StoppedBy);
            // The exit code speaks for the whole job, parts committed by earlier runs included.
            return summary.Interrupted ? interrupts.ExitCode : summary.FailedInJob > 0 ? ExitCodes.ItemsFailed : ExitCodes.Ok;
        }
        catch (DuplicateKeyException ex)
        {
            return errors.Fail($"{ex.Message} Keys must be unique for a job to resume exactly once; --allow-duplicate-keys runs every item, the later ones keyed {ex.Key}#2, {ex.Key}#3, ….");
        }
        catch (JobFolderException ex)
        {
            // The output folder holds another job, or its journal is damaged: nothing was run.
            return errors.Fail(Hints.For(ex));
        }
        catch (OperationCanceledException) when (hardStop.IsCancellationRequested)
        {
            errors.Writer.WriteLine($"inferpool: stopped; the parts committed so far are in {Path.GetFullPath(options.OutputDirectory)}. Run the same command again to resume.");
            return interrupts.ExitCode;
        }
        catch (InferencePoolException ex)
        {
            return errors.Fail(ex.Message);
        }
    }

    /// <summary>The job the settings describe: the command line wins over a tuned config, which wins over the defaults.</summary>
    private static (JobOptions Options, TunedConfig? Tuned) Resolve(RunSettings settings, ILogger logger)
    {
        var inventory = NvmlDeviceInventory.Discover();
        if (settings.Worker is not null && settings.Config is not null)
        {
            throw new InvalidOperationException("--config holds what 'inferpool tune' measured for an ONNX model; it does not apply to --worker.");
        }

        JobEngine? onnx = settings.Worker is not null ? null : settings.IsText ? LoadTextModel(settings, logger) : LoadModel(settings.Model ?? ModelChoice.BuiltInName, logger, settings.Pad, settings.MaxBatchTokens);
        (var input, onnx) = OpenInput(settings, onnx);
        var tuned = onnx is null ? null : FindTuned(settings.Config, settings.Output, onnx, inventory, logger);

        // A count in --devices (cpu=2) wins over --replicas; the tuned devices apply only when neither is given.
        var useTunedDevices = tuned is not null && settings.Devices == "auto" && settings.Replicas is null;
        var threads = settings.Threads ?? tuned?.Threads;
        var plan = DevicesOption.Plan(inventory, useTunedDevices ? tuned!.Devices : settings.Devices, settings.Replicas, threads);

        // Each worker process gets its share of the cores (for its own decoding and CPU inference).
        JobEngine engine = onnx ?? (JobEngine)new WorkerEngine(
            settings.Worker!,
            settings.WorkerOutput == "json",
            settings.Threads ?? WorkerOptions.ThreadsPerWorker(inventory.CpuCores, plan.TotalReplicas))
        {
            StartTimeout = TimeSpan.FromSeconds(settings.StartTimeoutSeconds),
            Prefork = settings.Prefork,
            Gpus = inventory.GpuDetails,
        };
        var options = new JobOptions
        {
            Input = input,
            Engine = engine,
            OutputDirectory = settings.Output,
            Plan = plan,
            BatchSize = settings.Batch ?? tuned?.Batch,
            IntraOpThreads = threads,
            Format = OutputFormat.Parse(settings.Format),
            PrepareWorkers = settings.PrepareWorkers ?? tuned?.PrepareWorkers,
            BatchTimeout = TimeSpan.FromSeconds(settings.BatchTimeoutSeconds),
            MaxPixels = settings.MaxPixels,
            RowsPerPart = settings.PartRows,
            Force = settings.Force,
            RequireResume = settings.Resume,
            FailFast = settings.FailFast,
            DuplicateKeys = settings.AllowDuplicateKeys ? DuplicateKeys.MakeUnique : DuplicateKeys.Fail,
            GpuTelemetry = plan.Devices.Any(d => d.Device.IsGpu) ? NvmlTelemetry.TryOpen(inventory.GpuDetails, out _) : null,
            GpuHeadroom = settings.GpuHeadroom,
        };
        return (options, tuned);
    }

    /// <summary>
    /// The input the settings name, opened for the engine: texts for a text model, table rows mapped to the model's inputs
    /// (the engine comes back with that mapping), whole records for workers, else images or records.
    /// </summary>
    internal static (InputSource Input, JobEngine? Engine) OpenInput(RunSettings settings, JobEngine? engine)
    {
        var path = settings.Input ?? (settings.IsText ? ToolFiles.SampleTexts : ToolFiles.SampleImages);
        if (!InputSource.IsTable(path))
        {
            if (settings.Key is not null || (!settings.IsText && settings.Column.Length > 0))
            {
                throw new ArgumentException($"--key and --column INPUT=COLUMNS read tables (.csv, .tsv, .parquet); '{path}' is not one.");
            }

            return (settings.IsText ? InputSource.OpenTexts(path, settings.TextColumn) : InputSource.Open(path, forWorker: settings.Worker is not null), engine);
        }

        if (settings.IsText)
        {
            return (InputSource.OpenTable(path, new TableOptions { KeyColumn = settings.Key, TextColumn = settings.TextColumn }), engine);
        }

        var table = InputSource.OpenTable(path, new TableOptions { KeyColumn = settings.Key });
        if (engine is not OnnxEngine onnx)
        {
            return (table, engine);
        }

        var columns = onnx.MapColumns(settings.InputColumns, table.Columns, settings.Key, path);
        return (table, new OnnxEngine(onnx.Model, onnx.Onnx) { TensorBatching = onnx.TensorBatching, InputColumns = columns });
    }

    /// <summary>The model named on the command line, with the option named in the message when it cannot be found.</summary>
    internal static OnnxEngine LoadModel(string model, ILogger logger, IReadOnlyList<string>? pad = null, int? maxBatchTokens = null)
    {
        try
        {
            var engine = OnnxEngine.Load(model, logger);
            if (pad is not { Count: > 0 } && maxBatchTokens is null)
            {
                return engine;
            }

            var values = new Dictionary<string, double>(StringComparer.Ordinal);
            foreach (var option in pad ?? [])
            {
                values[PadOption.TryParse(option, out var input, out var value) ? input : option] = engine.Onnx.Inputs.Any(i => i.Name == input)
                    ? value
                    : throw new ArgumentException($"--pad {option}: the model has no input '{input}'; its inputs are {string.Join(", ", engine.Onnx.Inputs.Select(i => i.Name))}.");
            }

            return new OnnxEngine(engine.Model, engine.Onnx) { TensorBatching = new Onnx.Tensors.TensorBatching { PadValues = values, MaxBatchTokens = maxBatchTokens } };
        }
        catch (FileNotFoundException ex) when (!string.Equals(model, ModelChoice.BuiltInName, StringComparison.OrdinalIgnoreCase))
        {
            throw new FileNotFoundException($"--model: {ex.Message}", ex.FileName, ex);
        }
    }

    /// <summary>The text model the settings name, with the option named in the message when a file cannot be found.</summary>
    internal static TextEngine LoadTextModel(RunSettings settings, ILogger logger)
    {
        var model = settings.Model ?? TextEngine.BuiltInName;
        var pooling = settings.Pooling switch
        {
            "cls" => Text.TextPooling.Cls,
            "none" => Text.TextPooling.None,
            null => (Text.TextPooling?)null,
            _ => Text.TextPooling.Mean,
        };
        try
        {
            return TextEngine.Load(model, settings.Tokenizer, pooling, settings.MaxTokens, settings.MaxBatchTokens, logger);
        }
        catch (FileNotFoundException ex) when (!TextEngine.IsBuiltIn(model))
        {
            throw new FileNotFoundException($"{(ex.FileName == settings.Tokenizer || ex.Message.Contains("tokenizer", StringComparison.Ordinal) ? "--tokenizer" : "--model")}: {ex.Message}", ex.FileName, ex);
        }
    }

    /// <summary>The tuned config to use (<see cref="TunedConfig.Find"/>), with the option named when a named one is refused.</summary>
    internal static TunedConfig? FindTuned(string? named, string? outputDirectory, JobEngine engine, IDeviceInventory inventory, ILogger logger)
    {
        var (path, sha) = engine switch
        {
            OnnxEngine onnx => (onnx.Model.Path, onnx.Onnx.Sha256),
            TextEngine text => (text.Text.Model.Path, text.Fingerprint),
            _ => throw new ArgumentException($"No tuned configs for {engine.Name}.", nameof(engine)),
        };
        try
        {
            return TunedConfig.Find(named, outputDirectory, path, sha, inventory, logger);
        }
        catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException)
        {
            throw new InvalidDataException($"--config: {ex.Message} (run 'inferpool tune' on this machine for this model)", ex);
        }
    }

    private static string Describe(JobOptions options, InferenceJob job, TunedConfig? tuned)
    {
        var from = tuned is null ? "" : string.Create(CultureInfo.InvariantCulture, $"Using the tuned configuration in {tuned.Source}: {tuned.Devices}, {tuned.Threads} thread(s), batch {tuned.Batch}{(tuned.PrepareWorkers is { } p ? $", {p} prepare worker(s)" : "")}, {tuned.ItemsPerSecond:F1} items/s measured {tuned.Measured:yyyy-MM-dd}.\n");
        var verb = options.Engine is WorkerEngine ? "Running" : options.Engine is OnnxEngine { FeedsImages: false } ? "Running" : "Embedding";
        var through = options.Engine is WorkerEngine ? "through" : "with";
        return $"{from}{verb} {options.Input.Description} {through} {options.Engine.Name} on {job.Plan} (batch {job.BatchSize}; {options.Engine.Describe()}).";
    }
}
