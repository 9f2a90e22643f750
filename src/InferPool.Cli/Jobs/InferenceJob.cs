using System.Globalization;
using System.Text.Json;
using InferPool.Cli.Images;
using InferPool.Cli.Inputs;
using InferPool.Cli.Output;
using InferPool.Devices;
using InferPool.Diagnostics;
using InferPool.Onnx;
using InferPool.Processes;
using InferPool.Replicas;
using InferPool.Results;
using Microsoft.Extensions.Logging;

namespace InferPool.Cli.Jobs;

/// <summary>
/// Composes a run: inputs → preparation (the pool's prepare stage) → replicas (ONNX Runtime sessions or worker
/// processes) → parts. The CLI's commands only parse and print; this is the job itself, testable without a console.
/// </summary>
internal sealed class InferenceJob
{
    private readonly JobSpec _spec;
    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;

    public InferenceJob(JobSpec spec, ILogger logger, TimeProvider timeProvider)
    {
        _spec = spec;
        _logger = logger;
        _timeProvider = timeProvider;
        Monitor = new PoolMonitor(timeProvider);
    }

    /// <summary>Live counters, for a progress display.</summary>
    public PoolMonitor Monitor { get; }

    /// <summary>GPU utilisation and memory sampled while the job runs (empty without GPUs or NVML).</summary>
    public IReadOnlyList<GpuUsage> GpuUsage => _gpuUsage();

    private Func<IReadOnlyList<GpuUsage>> _gpuUsage = () => [];

    /// <summary>Items in flight: enough to keep every replica fed and the preparation ahead, few enough that memory stays small.</summary>
    private int InFlight => Math.Max(32, 4 * _spec.Plan.TotalReplicas * _spec.BatchSize);

    /// <summary>Runs the job to the end of the input (or until <paramref name="stopIntake"/> ends it early).</summary>
    /// <param name="stopIntake">Stops taking new input; what is in flight still finishes and is committed.</param>
    /// <param name="cancellationToken">Stops now; only committed parts remain.</param>
    /// <exception cref="InferencePoolException">The job as a whole failed (no replica could start, the input could not be read).</exception>
    public Task<JobSummary> RunAsync(CancellationToken stopIntake, CancellationToken cancellationToken) => _spec.Engine switch
    {
        OnnxEngine onnx => RunOnnxAsync(onnx, stopIntake, cancellationToken),
        WorkerEngine worker => RunWorkersAsync(worker, stopIntake, cancellationToken),
        _ => throw new NotSupportedException($"No runner for {_spec.Engine}."),
    };

    private async Task<JobSummary> RunOnnxAsync(OnnxEngine engine, CancellationToken stopIntake, CancellationToken cancellationToken)
    {
        // Enough idle arrays for everything that can be in flight: prepared, queued, or in a batch.
        var tensors = new TensorPool(engine.Onnx.Input.ItemLength, InFlight + _spec.PrepareWorkers);
        var inputs = new OnnxInputs(engine, _spec.MaxPixels, tensors);
        var prepare = new PrepareStage<InputItem, float[]>((item, _) => ValueTask.FromResult(inputs.Prepare(item)))
        { Release = tensors.Return };

        using var factory = new OnnxReplicaFactory(engine.Onnx, new OnnxReplicaOptions { IntraOpThreads = _spec.IntraOpThreads });
        return await RunCoreAsync(
            factory,
            prepare,
            result => Row(result, result.Value, null),
            () => [.. factory.Replicas.Select(r => new ReplicaUsage(r.Replica, $"{r.IntraOpThreads} thread(s)", r.ResidentBytes))],
            stopIntake,
            cancellationToken).ConfigureAwait(false);
    }

    private async Task<JobSummary> RunWorkersAsync(WorkerEngine engine, CancellationToken stopIntake, CancellationToken cancellationToken)
    {
        var threads = engine.Threads.ToString(CultureInfo.InvariantCulture);
        var factory = new WorkerReplicaFactory(
            new WorkerOptions
            {
                Command = engine.Command,
                Environment = new Dictionary<string, string>(StringComparer.Ordinal)
                {
                    // So that CPU replicas do not oversubscribe the cores (PyTorch, NumPy and ONNX Runtime read it).
                    ["OMP_NUM_THREADS"] = threads,
                    ["INFERPOOL_THREADS"] = threads,
                },
            },
            _logger);
        var prepare = new PrepareStage<InputItem, WorkerInput>((item, _) => ValueTask.FromResult(ToWorkerInput(item)));
        return await RunCoreAsync(
            factory,
            prepare,
            result => result.IsSuccess ? WorkerRow(engine, result) : Row(result, null, null),
            () => [.. factory.Workers.Select(w => new ReplicaUsage(w.Replica, $"pid {w.ProcessId}", w.ResidentBytes))],
            stopIntake,
            cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A worker's output as a row: JSON text as it came, or numbers (nested arrays flattened) as a float list.</summary>
    private static ResultRow WorkerRow(WorkerEngine engine, in InferenceResult<InputItem, JsonElement> result)
    {
        var output = result.Value;
        if (engine.JsonOutput)
        {
            return Row(result, null, output.GetRawText());
        }

        return TryVector(output, out var vector, out var error)
            ? Row(result, [vector], null)
            : new ResultRow(result.Item.Key, false, $"{error} (use --worker-output json to keep any JSON)", null, result.Device?.ToString(), result.Replica?.Name, result.Attempts);
    }

    /// <summary>What a worker is sent for an item: its whole record, or its path as a JSON string.</summary>
    /// <exception cref="InvalidDataException">The item is unusable (a malformed record), or has neither.</exception>
    internal static WorkerInput ToWorkerInput(InputItem item) =>
        item.Error is { } error ? throw new InvalidDataException(error)
        : new WorkerInput(item.Key, item.Record ?? JsonSerializer.SerializeToElement(item.Path ?? throw new InvalidDataException($"'{item.Key}' has no path to send to the worker."), CliJson.Default.String));

    /// <summary>A worker's output as a vector: a number, or arrays of numbers at any depth, flattened in order.</summary>
    internal static bool TryVector(JsonElement output, out float[] vector, out string error)
    {
        var values = new List<float>();
        if (TryFlatten(output, values))
        {
            (vector, error) = ([.. values], "");
            return true;
        }

        var text = output.GetRawText();
        (vector, error) = ([], $"InvalidOutput: the worker's output is not a number or an array of numbers: {(text.Length <= 120 ? text : text[..120] + "…")}");
        return false;
    }

    private static bool TryFlatten(JsonElement value, List<float> into)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.Number:
                into.Add(value.GetSingle());
                return true;
            case JsonValueKind.Array:
                foreach (var element in value.EnumerateArray())
                {
                    if (!TryFlatten(element, into))
                    {
                        return false;
                    }
                }

                return true;
            default:
                return false;
        }
    }

    private static ResultRow Row<TOutput>(in InferenceResult<InputItem, TOutput> result, float[][]? outputs, string? json) => new(
        result.Item.Key,
        result.IsSuccess,
        result.Error?.ToString(),
        outputs,
        result.Device?.ToString(),
        result.Replica?.Name,
        result.Attempts,
        json);

    private async Task<JobSummary> RunCoreAsync<TPrepared, TOutput>(
        IReplicaFactory<TPrepared, TOutput> factory,
        PrepareStage<InputItem, TPrepared> prepare,
        Func<InferenceResult<InputItem, TOutput>, ResultRow> toRow,
        Func<IReadOnlyList<ReplicaUsage>> replicas,
        CancellationToken stopIntake,
        CancellationToken cancellationToken)
    {
        var engine = _spec.Engine;
        var identity = new JobIdentity(engine.Name, engine.Fingerprint, _spec.Input.FullPath, _spec.Format.Name, [.. engine.Columns.Select(c => c.ToString())]);
        var start = await OutputFolder.OpenAsync(_spec.OutputDirectory, identity, _spec.Force, _spec.RequireResume, cancellationToken).ConfigureAwait(false);
        if (start.Journal.Finished)
        {
            // Nothing left to do; no replica is built.
            return new JobSummary(0, 0, TimeSpan.Zero, Monitor.Snapshot(), [], [], new Dictionary<string, int>(), [], Interrupted: false, Skipped: start.CommittedKeys.Count, Resumed: true, start.Discarded, StoppedOnFailure: false, start.CommittedFailures, AlreadyComplete: true);
        }

        var writer = new PartWriter(_spec.OutputDirectory, start.Journal, _spec.Format, engine.Columns, _spec.RowsPerPart);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(stopIntake);
        var notes = new List<string>();
        void Note(object? sender, ReplicaEvent e)
        {
            if (e.Kind is ReplicaEventKind.Capped or ReplicaEventKind.BatchLimitHalved or ReplicaEventKind.DeviceRemoved)
            {
                lock (notes)
                {
                    notes.Add(e.Message);
                }
            }
        }

        Monitor.ReplicaChanged += Note;
        var gpus = _spec.Plan.Devices.Where(d => d.Device.IsGpu).Select(d => d.Device).ToList();
        var sampler = new GpuSampler(_spec.GpuTelemetry ?? NoGpus.Instance, gpus, _timeProvider);
        await using var sampling = sampler.ConfigureAwait(false);
        _gpuUsage = sampler.Usage;
        sampler.Start();
        var options = new InferencePoolOptions
        {
            Replicas = _spec.Plan,
            MaxInFlight = InFlight,
            MaxBatchSize = _spec.BatchSize,
            PrepareParallelism = _spec.PrepareWorkers,
            BatchTimeout = _spec.BatchTimeout,
            Order = ResultOrder.Input,
            Monitor = Monitor,
            Logger = _logger,
            TimeProvider = _timeProvider,
            GpuTelemetry = _spec.GpuTelemetry,
            GpuMemoryHeadroom = _spec.GpuHeadroom,
        };

        var started = _timeProvider.GetTimestamp();
        long items = 0;
        long failed = 0;
        var firstFailures = new List<(string, string)>();
        var byReason = new Dictionary<string, int>(StringComparer.Ordinal);
        long skipped = 0;
        var input = StopWhen(_spec.Input.ReadAsync(), stop.Token).Where(item =>
        {
            // Resuming: what an earlier run committed is not done again.
            if (!start.CommittedKeys.Contains(item.Key))
            {
                return true;
            }

            skipped++;
            return false;
        });
        var checkedPrepare = new PrepareStage<InputItem, TPrepared>((item, token) => item.Error is null ? prepare.Prepare(item, token) : throw new InvalidDataException(item.Error))
        {
            Release = prepare.Release,
        };
        await foreach (var result in InferencePool.RunAsync(input, checkedPrepare, factory, options, cancellationToken).ConfigureAwait(false))
        {
            items++;
            var row = toRow(result);
            if (!row.Ok)
            {
                failed++;
                var reason = row.Error ?? "unknown";
                if (firstFailures.Count < JobSummary.FailuresListed)
                {
                    firstFailures.Add((row.Key, reason));
                }

                var type = result.Error?.Type ?? reason.Split(':', 2)[0];
                byReason[type] = byReason.GetValueOrDefault(type) + 1;
                if (_spec.FailFast)
                {
                    // Stop taking input; what is in flight still finishes and is committed.
                    await stop.CancelAsync().ConfigureAwait(false);
                }
            }

            await writer.AddAsync(row, cancellationToken).ConfigureAwait(false);
        }

        await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        var stoppedEarly = stop.IsCancellationRequested;
        if (!stoppedEarly)
        {
            start.Journal.Finished = true;
            start.Journal.Save(_spec.OutputDirectory);
        }

        return new JobSummary(
            items,
            failed,
            _timeProvider.GetElapsedTime(started),
            Monitor.Snapshot(),
            writer.Parts,
            firstFailures,
            byReason,
            replicas(),
            stopIntake.IsCancellationRequested,
            skipped,
            start.Resumed,
            start.Discarded,
            stoppedEarly && !stopIntake.IsCancellationRequested,
            start.CommittedFailures,
            Gpus: GpuUsage,
            Notes: [.. notes]);
    }

    private static async IAsyncEnumerable<InputItem> StopWhen(
        IAsyncEnumerable<InputItem> items,
        CancellationToken stop,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var item in items.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            if (stop.IsCancellationRequested)
            {
                yield break;
            }

            yield return item;
        }
    }

    /// <summary>Telemetry where there is none (no GPU or no NVML): the sampler then reads nothing.</summary>
    private sealed class NoGpus : IGpuTelemetry
    {
        public static readonly NoGpus Instance = new();

        public GpuReading? Read(Device gpu) => null;
    }
}
