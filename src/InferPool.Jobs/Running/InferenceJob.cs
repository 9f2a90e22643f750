using System.Runtime.CompilerServices;
using InferPool.Devices;
using InferPool.Diagnostics;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Parts;
using InferPool.Results;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferPool.Jobs;

/// <summary>
/// A resumable job: inputs → preparation → replicas (the engine's) → parts in an output folder with a journal.
/// Running it again after a crash or a stop resumes it: committed keys are skipped, torn parts discarded, and every
/// key ends up in the output exactly once.
/// </summary>
/// <example>
/// <code>
/// var job = new InferenceJob(new JobOptions
/// {
///     Input = InputSource.Open("photos"),
///     Engine = OnnxEngine.Load("resnet18"),
///     OutputDirectory = "embeddings",
/// });
/// var summary = await job.RunAsync();
/// </code>
/// </example>
public sealed partial class InferenceJob
{
    private readonly JobOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;
    private Func<IReadOnlyList<GpuUsage>> _gpuUsage = () => [];

    /// <summary>Prepares a job; nothing runs until <see cref="RunAsync(CancellationToken, CancellationToken)"/>.</summary>
    /// <param name="options">The job.</param>
    /// <param name="logger">Where replica events and worker messages go; null for nowhere.</param>
    /// <param name="timeProvider">The clock for timings and sampling; null for the system clock.</param>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public InferenceJob(JobOptions options, ILogger? logger = null, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.RowsPerPart, 1, nameof(options.RowsPerPart));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxPixels, 1, nameof(options.MaxPixels));
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        _timeProvider = timeProvider ?? TimeProvider.System;
        Plan = options.Plan ?? JobDefaults.Plan(NvmlDeviceInventory.Discover(), threads: options.IntraOpThreads);
        var batch = options.BatchSize ?? JobDefaults.Batch(Plan, options.Engine);
        BatchSize = Math.Min(batch, options.Engine.MaxBatchSize ?? batch);
        if (BatchSize < batch && options.BatchSize is not null)
        {
            _logger.LogWarning("A batch of {Batch} is more than {Model} takes; using {Most}.", batch, options.Engine.Name, BatchSize);
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(options.BatchSize));
        Monitor = new PoolMonitor(_timeProvider);
    }

    /// <summary>Where the replicas run.</summary>
    public ReplicaPlan Plan { get; }

    /// <summary>The most items per model call.</summary>
    public int BatchSize { get; }

    /// <summary>Live counters, for a progress display.</summary>
    public PoolMonitor Monitor { get; }

    /// <summary>GPU utilisation and memory sampled while the job runs (empty without GPUs or telemetry).</summary>
    public IReadOnlyList<GpuUsage> GpuUsage => _gpuUsage();

    /// <summary>Runs the job to the end of its input.</summary>
    /// <param name="cancellationToken">Stops now; only committed parts remain, and the job resumes when run again.</param>
    /// <exception cref="JobFolderException">The output folder cannot be used as it is; nothing ran.</exception>
    /// <exception cref="InferencePoolException">The job as a whole failed (no replica could start, the input could not be read).</exception>
    public Task<JobSummary> RunAsync(CancellationToken cancellationToken = default) => RunAsync(CancellationToken.None, cancellationToken);

    /// <summary>Runs the job to the end of its input, or until <paramref name="stopIntake"/> ends it early.</summary>
    /// <param name="stopIntake">Stops taking new input; what is in flight still finishes and is committed.</param>
    /// <param name="cancellationToken">Stops now; only committed parts remain, and the job resumes when run again.</param>
    /// <exception cref="JobFolderException">The output folder cannot be used as it is; nothing ran.</exception>
    /// <exception cref="DuplicateKeyException">A list file gives a key twice (with <see cref="DuplicateKeys.Fail"/>); nothing ran.</exception>
    /// <exception cref="InferencePoolException">The job as a whole failed (no replica could start, the input could not be read).</exception>
    public async Task<JobSummary> RunAsync(CancellationToken stopIntake, CancellationToken cancellationToken)
    {
        var engine = _options.Engine;
        var runStarted = _timeProvider.GetTimestamp();
        var phases = new List<JobPhase>();
        void Phase(string name)
        {
            var at = _timeProvider.GetElapsedTime(runStarted);
            lock (phases)
            {
                phases.Add(new JobPhase(name, at));
            }

            LogPhase(_logger, name, at.TotalMilliseconds);
        }

        if (_options.DuplicateKeys == DuplicateKeys.Fail)
        {
            _options.Input.CheckKeysUnique(_options.OutputDirectory is { } folder && Directory.Exists(folder) ? folder : null);
        }

        var identity = new JobIdentity(engine.Name, engine.Fingerprint, _options.Input.FullPath, _options.Format.Name, [.. engine.Columns.Select(c => c.ToString())]);
        using var start = await OutputFolder.OpenAsync(_options.OutputDirectory, identity, _options.Force, _options.RequireResume, _options.Format, cancellationToken).ConfigureAwait(false);
        Phase("output folder ready");
        if (start.Journal.Finished)
        {
            // Nothing left to do; no replica is built.
            return new JobSummary { Final = Monitor.Snapshot(), Skipped = start.CommittedKeys.Count, Resumed = true, Discarded = start.Discarded, FailedEarlier = start.CommittedFailures, AlreadyComplete = true };
        }

        var notes = new List<string>();
        var capped = new List<(string Slot, string Message)>();
        void Note(object? sender, ReplicaEvent e)
        {
            if (e.Kind is ReplicaEventKind.Started)
            {
                Phase($"replica {e.Slot.Name} started");
            }
            else if (e.Kind is ReplicaEventKind.Capped)
            {
                lock (notes)
                {
                    capped.Add((e.Slot.Name, e.Message));
                }
            }
            else if (e.Kind is ReplicaEventKind.BatchLimitHalved or ReplicaEventKind.DeviceRemoved)
            {
                lock (notes)
                {
                    notes.Add(e.Message);
                }
            }
        }

        Monitor.ReplicaChanged += Note;
        var gpus = Plan.Devices.Where(d => d.Device.IsGpu).Select(d => d.Device).ToList();
        var sampler = new GpuSampler(_options.GpuTelemetry ?? NoGpus.Instance, gpus, _timeProvider);
        await using var sampling = sampler.ConfigureAwait(false);
        _gpuUsage = sampler.Usage;
        sampler.Start();
        var pool = new InferencePoolOptions
        {
            Replicas = Plan,
            MaxBatchSize = BatchSize,
            PrepareParallelism = _options.PrepareWorkers ?? Environment.ProcessorCount,
            BatchTimeout = _options.BatchTimeout,
            Order = ResultOrder.Input,
            Monitor = Monitor,
            Logger = _logger,
            TimeProvider = _timeProvider,
            GpuTelemetry = _options.GpuTelemetry,
            GpuMemoryHeadroom = _options.GpuHeadroom,
        };
        var session = engine.OpenSession(
            new EngineSessionOptions
            {
                IntraOpThreads = _options.IntraOpThreads,
                MaxPixels = _options.MaxPixels,
                TensorCapacity = EngineSessionOptions.TensorCapacityFor(pool),
                Gpus = gpus.Count > 0 ? NvmlDeviceInventory.Discover().GpuDetails : [],
                GpuHeadroom = _options.GpuHeadroom,
            },
            _logger);
        await using var _ = session.ConfigureAwait(false);
        Phase("engine session open");

        // Compiles the part writer's code while the replicas build, rather than when the job's last part is due.
        var warmUp = Task.Run(() => _options.Format.WarmUpAsync(engine.Columns, cancellationToken), CancellationToken.None);
        var writer = new PartWriter(_options.OutputDirectory, start.Journal, _options.Format, engine.Columns, _options.RowsPerPart);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(stopIntake);
        var started = _timeProvider.GetTimestamp();
        long items = 0;
        long failed = 0;
        long skipped = 0;
        var firstFailures = new List<(string, string)>();
        var byReason = new Dictionary<string, int>(StringComparer.Ordinal);
        // A source whose keys cannot repeat (a folder's paths, line numbers, row numbers) needs no set of every key seen.
        using var keys = _options.Input.KeysAreUnique ? null : new UniqueKeys(_options.DuplicateKeys, _options.OutputDirectory);
        Func<InputItem, InputItem> unique = keys is null ? static item => item : keys.Apply;
        var input = StopWhen(_options.Input.ReadAsync(cancellationToken), stop.Token).Select(unique).Where(item =>
        {
            // Resuming: what an earlier run committed is not done again.
            if (!start.CommittedKeys.Contains(item.Key))
            {
                return true;
            }

            skipped++;
            return false;
        });
        long truncated = 0;
        await foreach (var row in session.RunAsync(input, pool, cancellationToken).ConfigureAwait(false))
        {
            if (items == 0)
            {
                Phase("first result");
            }

            items++;
            truncated += row.Truncated ? 1 : 0;
            if (!row.Ok)
            {
                failed++;
                var reason = row.Error ?? "unknown";
                if (firstFailures.Count < JobSummary.FailuresListed)
                {
                    firstFailures.Add((row.Key, reason));
                }

                var type = row.ErrorType ?? reason.Split(':', 2)[0];
                byReason[type] = byReason.GetValueOrDefault(type) + 1;
                if (_options.FailFast)
                {
                    // Stop taking input; what is in flight still finishes and is committed.
                    await stop.CancelAsync().ConfigureAwait(false);
                }
            }

            await writer.AddAsync(row, cancellationToken).ConfigureAwait(false);
        }

        Phase("last result");
        await warmUp.ConfigureAwait(false);
        await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        Phase("parts written");
        var stoppedEarly = stop.IsCancellationRequested;
        if (!stoppedEarly)
        {
            start.Journal.Finished = true;
            await start.Journal.SaveAsync(_options.OutputDirectory, cancellationToken).ConfigureAwait(false);
        }

        Monitor.ReplicaChanged -= Note;
        return new JobSummary
        {
            Items = items,
            Failed = failed,
            Truncated = truncated,
            Elapsed = _timeProvider.GetElapsedTime(started),
            Final = Monitor.Snapshot(),
            Parts = writer.Parts,
            FirstFailures = firstFailures,
            FailuresByReason = byReason,
            Replicas = session.Replicas,
            Interrupted = stopIntake.IsCancellationRequested,
            Skipped = skipped,
            Resumed = start.Resumed,
            Discarded = start.Discarded,
            StoppedOnFailure = stoppedEarly && !stopIntake.IsCancellationRequested,
            FailedEarlier = start.CommittedFailures,
            Gpus = GpuUsage,
            Notes = [.. CappedNotes(capped), .. notes], // the pool has stopped: no more events
            Phases = [.. phases],
        };
    }

    private static async IAsyncEnumerable<InputItem> StopWhen(
        IAsyncEnumerable<InputItem> items,
        CancellationToken stop,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
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

    /// <summary>One note per GPU cap, naming the replicas it left out, instead of the same reason once for each of them.</summary>
    internal static List<string> CappedNotes(List<(string Slot, string Message)> capped)
    {
        const string Prefix = " is not started: ";
        return [.. capped
            .GroupBy(c => c.Message[(c.Message.IndexOf(Prefix, StringComparison.Ordinal) + Prefix.Length)..], StringComparer.Ordinal)
            .Select(g => g.Count() == 1 ? g.First().Message : $"Replicas {string.Join(", ", g.Select(c => c.Slot).Order(StringComparer.Ordinal))} are not started: {g.Key}")];
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Phase} after {Milliseconds:F0} ms")]
    private static partial void LogPhase(ILogger logger, string phase, double milliseconds);
}
