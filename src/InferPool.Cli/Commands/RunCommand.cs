using System.Globalization;
using InferPool.Cli.Inputs;
using InferPool.Cli.Jobs;
using InferPool.Cli.Models;
using InferPool.Cli.Output;
using InferPool.Cli.Progress;
using InferPool.Cli.Tuning;
using InferPool.Devices;
using InferPool.Onnx;
using Microsoft.Extensions.Logging;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>
/// <c>inferpool run</c>: checks and resolves the settings (model, devices, input) before any work, runs the
/// job with a progress display, prints the summary, and maps the outcome to an exit code.
/// </summary>
internal sealed class RunCommand : AsyncCommand<RunSettings>
{
    private readonly IAnsiConsole _console;
    private readonly TextWriter _errors;
    private readonly TimeProvider _time;
    private readonly Interrupts _interrupts;

    public RunCommand()
        : this(AnsiConsole.Console, Console.Error, TimeProvider.System, Program.Interrupts)
    {
    }

    internal RunCommand(IAnsiConsole console, TextWriter errors, TimeProvider time, Interrupts interrupts)
    {
        _console = console;
        _errors = errors;
        _time = time;
        _interrupts = interrupts;
    }

    public override async Task<int> ExecuteAsync(CommandContext context, RunSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Cluster is not null)
        {
            return await Cluster.ClusterSubmit.RunAsync(settings, _console.Profile.Out.Writer, _errors, cancellationToken).ConfigureAwait(false);
        }

        var logger = new ConsoleLogger(_errors, settings.Verbose ? LogLevel.Information : LogLevel.Warning);
        JobSpec spec;
        try
        {
            spec = Resolve(settings, logger);
        }
        catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException or NotSupportedException or InvalidOperationException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            return Fail(ex.Message);
        }

        using var telemetry = spec.GpuTelemetry as IDisposable;
        if (!settings.Quiet)
        {
            _console.WriteLine(Describe(spec));
        }

        using var hardStop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _interrupts.StopNow);
        var job = new InferenceJob(spec, logger, _time);
        // The total is counted beside the job, for the progress bar and ETA; until it is known (or if the
        // count fails) progress shows counts without a total.
        long total = -1;
        _ = Task.Run(
            () =>
            {
                try
                {
                    Interlocked.Exchange(ref total, spec.Input.Count());
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // The job itself reports unreadable inputs, item by item.
                }
            },
            hardStop.Token);
        try
        {
            var summary = await new ProgressDisplay(_console, _time, settings.Quiet)
                .RunAsync(() => job.RunAsync(_interrupts.StopIntake, hardStop.Token), job.Monitor, () => Interlocked.Read(ref total) is >= 0 and var t ? t : null, () => job.GpuUsage)
                .ConfigureAwait(false);
            PrintSummary(spec, summary);
            // The exit code speaks for the whole job, parts committed by earlier runs included.
            return summary.Interrupted ? ExitCodes.Interrupted : summary.Failed + summary.FailedEarlier > 0 ? ExitCodes.ItemsFailed : ExitCodes.Ok;
        }
        catch (Exception ex) when (ex is InvalidOperationException or InvalidDataException)
        {
            // The output folder holds another job, or its journal is damaged: nothing was run.
            return Fail(ex.Message);
        }
        catch (OperationCanceledException) when (hardStop.IsCancellationRequested)
        {
            _errors.WriteLine($"inferpool: stopped; the parts committed so far are in {Path.GetFullPath(spec.OutputDirectory)}. Run the same command again to resume.");
            return ExitCodes.Interrupted;
        }
        catch (InferencePoolException ex)
        {
            return Fail(ex.Message);
        }
    }

    private static JobSpec Resolve(RunSettings settings, ILogger logger)
    {
        var inputPath = settings.Input ?? InputSource.SampleImages;
        var input = InputSource.Open(inputPath, forWorker: settings.Worker is not null);
        var format = OutputFormat.Parse(settings.Format);
        var inventory = NvmlDeviceInventory.Discover();
        OnnxEngine? onnxEngine = null;
        TunedConfig? tuned = null;
        if (settings.Worker is null)
        {
            onnxEngine = OnnxEngine.Load(settings.Model ?? ModelChoice.BuiltInName, logger);
            tuned = FindTunedConfig(settings, onnxEngine, inventory, logger);
        }
        else if (settings.Config is not null)
        {
            throw new InvalidOperationException("--config holds what 'inferpool tune' measured for an ONNX model; it does not apply to --worker.");
        }

        // The command line wins over a tuned config, which wins over the defaults; a count in --devices
        // (cpu=2) wins over --replicas.
        var useTunedDevices = tuned is not null && settings.Devices == "auto" && settings.Replicas is null;
        var threadsPerReplica = settings.Threads ?? tuned?.Threads;
        var spec = DeviceSpec.Parse(useTunedDevices ? tuned!.Devices : settings.Devices);
        var plan = spec.Resolve(inventory, d => settings.Replicas ?? DefaultReplicas(d, inventory.CpuCores, threadsPerReplica));
        var batch = settings.Batch ?? tuned?.Batch ?? DefaultBatch(plan);
        JobEngine engine;
        if (onnxEngine is null)
        {
            // Each worker process gets its share of the cores (for its own decoding and CPU inference).
            var threads = settings.Threads ?? Math.Max(1, inventory.CpuCores / plan.TotalReplicas);
            engine = new WorkerEngine(settings.Worker!, settings.WorkerOutput == "json", threads);
        }
        else
        {
            engine = onnxEngine;
            var onnx = onnxEngine.Onnx;
            if (onnx.MaxBatchSize is { } most && batch > most)
            {
                if (settings.Batch is not null)
                {
                    logger.LogWarning("--batch {Batch} is more than the model takes ({Report}); using {Most}.", batch, onnx.BatchingReport, most);
                }

                batch = most;
            }
        }

        return new JobSpec(
            input,
            engine,
            plan,
            threadsPerReplica,
            batch,
            format,
            settings.Output,
            settings.PrepareWorkers ?? Environment.ProcessorCount,
            TimeSpan.FromSeconds(settings.BatchTimeoutSeconds),
            settings.MaxPixels,
            settings.PartRows,
            settings.Force,
            settings.Resume,
            settings.FailFast,
            tuned is null ? null : $"{tuned.Source}: {tuned.Devices}, {tuned.Threads} thread(s), batch {tuned.Batch}, {tuned.ItemsPerSecond:F1} items/s measured {tuned.Measured:yyyy-MM-dd}",
            plan.Devices.Any(d => d.Device.IsGpu) ? NvmlTelemetry.TryOpen(out _) : null,
            settings.GpuHeadroom);
    }

    /// <summary>
    /// The tuned config to use: <c>--config</c>, else <c>inferpool.tuned.json</c> in the output folder, else the
    /// one beside the model. A config for another model is an error when named and ignored (with a warning) when
    /// found; one measured on another machine is used when named and ignored when found, with a warning either way.
    /// </summary>
    private static TunedConfig? FindTunedConfig(RunSettings settings, OnnxEngine engine, IDeviceInventory inventory, ILogger logger)
    {
        var named = settings.Config is not null;
        var path = settings.Config
            ?? new[] { Path.Combine(settings.Output, TunedConfig.FileName), TunedConfig.BesideModel(engine.Model.Path) }.FirstOrDefault(File.Exists);
        if (path is null)
        {
            return null;
        }

        if (named && !File.Exists(path))
        {
            throw new FileNotFoundException($"--config '{path}' does not exist.");
        }

        var config = TunedConfig.Load(path) with { Source = Path.GetFullPath(path) };
        if (config.ModelSha256 != engine.Onnx.Sha256)
        {
            var why = $"{path} was tuned for model {config.Model} (sha256 {config.ModelSha256[..Math.Min(12, config.ModelSha256.Length)]}…), not {engine.Name}";
            if (named)
            {
                throw new InvalidDataException($"{why}; run 'inferpool tune' for this model.");
            }

            logger.LogWarning("Ignoring {Why}.", why);
            return null;
        }

        var machine = TunedConfig.MachineOf(inventory);
        if (config.Machine != machine)
        {
            logger.LogWarning("{Path} was measured on {Then}; this machine has {Now}{Action}.", path, config.Machine, machine, named ? "; using it anyway" : "; ignoring it (run 'inferpool tune' here)");
            return named ? config : null;
        }

        return config;
    }

    /// <summary>Replicas on a device when none are given: two per GPU (capped by memory), <see cref="CpuReplicas"/> on the CPU.</summary>
    internal static int DefaultReplicas(Device device, int cores, int? threads) => device.IsGpu ? 2 : CpuReplicas(cores, threads);

    /// <summary>Batch size when none is given: 1 on the CPU (batching does not pay there), 32 with a GPU.</summary>
    internal static int DefaultBatch(ReplicaPlan plan) => plan.Devices.Any(d => d.Device.IsGpu) ? 32 : 1;

    /// <summary>
    /// CPU replicas when none are given: one single-threaded session per core on small machines, where it
    /// beats one session with all cores (measured on 2 cores: 2×1 ≈ 35 img/s, 1×2 ≈ 31, 2×2 ≈ 21);
    /// two threads per session above 4 cores, to keep memory in check. <c>inferpool tune</c> measures instead of guessing.
    /// </summary>
    internal static int CpuReplicas(int cores, int? threads)
    {
        var perReplica = threads ?? (cores <= 4 ? 1 : 2);
        return Math.Max(1, cores / perReplica);
    }

    private static string Describe(JobSpec spec) => (spec.TunedFrom is null ? "" : $"Using the tuned configuration in {spec.TunedFrom}.\n") + spec.Engine switch
    {
        OnnxEngine onnx => $"Embedding {spec.Input.Description} with {onnx.Name} on {spec.Plan} (batch {spec.BatchSize}; {onnx.Onnx.BatchingReport}).",
        WorkerEngine worker => $"Running {spec.Input.Description} through {worker.Name} on {spec.Plan} (one process per replica, batch {spec.BatchSize}, {worker.Threads} thread(s) each).",
        _ => spec.Engine.Name,
    };

    private void PrintSummary(JobSpec spec, JobSummary s)
    {
        if (s.AlreadyComplete)
        {
            _console.WriteLine(
                $"Nothing to do: the job in {Path.GetFullPath(spec.OutputDirectory)} is already complete ({s.Skipped} item(s){(s.FailedEarlier > 0 ? $", {s.FailedEarlier} of them failed" : "")}). Use --force to run it again.");
            return;
        }

        var ok = s.Items - s.Failed;
        _console.WriteLine();
        if (s.Items == 0 && s.Skipped == 0 && !s.Interrupted)
        {
            var what = spec.Engine is OnnxEngine ? $"image files ({string.Join(" ", InputSource.ImageExtensions.Order(StringComparer.Ordinal))})" : "files";
            _errors.WriteLine($"inferpool: warning: {spec.Input.Description} holds no inputs; a folder is searched for {what}.");
        }

        if (s.Resumed)
        {
            _console.WriteLine($"Resumed the job in {Path.GetFullPath(spec.OutputDirectory)}: {s.Skipped} item(s) were already committed and were skipped{(s.FailedEarlier > 0 ? $" ({s.FailedEarlier} of the committed rows are failures)" : "")}{(s.Discarded > 0 ? $"; {s.Discarded} uncommitted leftover file(s) discarded" : "")}.");
        }

        _console.WriteLine($"{(s.Interrupted || s.StoppedOnFailure ? "Stopped early" : "Done")}: {s.Items} items, {ok} ok, {s.Failed} failed in {ProgressDisplay.Duration(s.Elapsed)} ({s.ItemsPerSecond:F1} items/s).");
        foreach (var d in s.Final.Devices)
        {
            var share = s.Items == 0 ? 0 : (double)d.Items / s.Items;
            var replicas = s.Replicas.Where(r => r.Replica.StartsWith(d.Device + "#", StringComparison.Ordinal)).ToList();
            var threads = replicas.Count == 0 || spec.Engine is not OnnxEngine ? "" : $" × {replicas[0].Detail}";
            _console.WriteLine($"  {d.Device}: {d.Items} items ({share:P0}), {d.ReplicasPlanned} replica(s){threads}, busy {d.BusyFraction:P0}{(d.Faults > 0 ? $", {d.Faults} replica fault(s)" : "")}{(d.Removed ? ", removed" : "")}");
        }

        if (s.Replicas.Count > 0)
        {
            var each = string.Join(", ", s.Replicas.Select(r => r.ResidentBytes is { } bytes ? string.Create(CultureInfo.InvariantCulture, $"{r.Replica} {bytes / (1024.0 * 1024):F0} MB") : $"{r.Replica} unknown"));
            var how = spec.Engine is OnnxEngine ? "pre-packed weights shared between CPU replicas" : "each worker process with its children, once its model was loaded";
            _console.WriteLine($"  Resident memory per replica: {each} ({how}).");
        }

        if (s.Failed > 0)
        {
            _console.WriteLine($"Failures by reason: {string.Join(", ", s.FailuresByReason.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} × {kv.Value}"))}");
            foreach (var (key, reason) in s.FirstFailures)
            {
                _console.WriteLine($"  {key}: {reason}");
            }

            if (s.Failed > s.FirstFailures.Count)
            {
                _console.WriteLine($"  … and {s.Failed - s.FirstFailures.Count} more (status = 'failed' in the output).");
            }
        }

        foreach (var gpu in s.Gpus ?? [])
        {
            var util = gpu.MeanUtilizationPercent is { } u ? string.Create(CultureInfo.InvariantCulture, $"mean utilisation {u:F0}%") : "utilisation not reported";
            var total = gpu.Latest is { } r ? string.Create(CultureInfo.InvariantCulture, $" of {r.TotalMemoryBytes / (1024.0 * 1024 * 1024):F1}") : "";
            _console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {gpu.Device}: {util}, peak memory in use {gpu.PeakUsedBytes / (1024.0 * 1024 * 1024):F1}{total} GiB ({gpu.Samples} samples, about one a second)."));
        }

        foreach (var note in s.Notes ?? [])
        {
            _console.WriteLine($"  Note: {note}");
        }

        using (var self = System.Diagnostics.Process.GetCurrentProcess())
        {
            _console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  Peak resident memory of the process: {self.PeakWorkingSet64 / (1024.0 * 1024):F0} MB."));
        }

        _console.WriteLine($"Output: {Path.GetFullPath(spec.OutputDirectory)} ({s.Parts.Count} {spec.Format.Name} part(s), columns key, status, error, {string.Join(", ", spec.Engine.Columns)}, device, replica, attempts)");
        if (s.Interrupted || s.StoppedOnFailure)
        {
            _console.WriteLine($"{(s.StoppedOnFailure ? "Stopped at the first failure (--fail-fast)" : "Stopped by Ctrl+C")}: the items finished so far are committed. Run the same command again to resume.");
        }
    }

    private int Fail(string message)
    {
        _errors.WriteLine($"inferpool: {message}");
        return ExitCodes.JobFailed;
    }
}
