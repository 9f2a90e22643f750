using InferPool.Cli.Images;
using InferPool.Cli.Inputs;
using InferPool.Cli.Output;
using InferPool.Diagnostics;
using InferPool.Onnx;
using InferPool.Results;
using Microsoft.Extensions.Logging;

namespace InferPool.Cli.Jobs;

/// <summary>
/// Composes a run: inputs → image preparation (the pool's prepare stage) → ONNX Runtime replicas → parts.
/// The CLI's commands only parse and print; this is the job itself, testable without a console.
/// </summary>
internal sealed class EmbeddingJob
{
    private readonly JobSpec _spec;
    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;
    private readonly TensorPool _tensors;
    private readonly Lazy<ImagePreprocessor> _images;

    public EmbeddingJob(JobSpec spec, ILogger logger, TimeProvider timeProvider)
    {
        _spec = spec;
        _logger = logger;
        _timeProvider = timeProvider;
        Monitor = new PoolMonitor(timeProvider);

        // Enough idle arrays for everything that can be in flight: prepared, queued, or in a batch.
        _tensors = new TensorPool(spec.Onnx.Input.ItemLength, InFlight(spec) + spec.PrepareWorkers);
        _images = new(() => spec.Model.ImagePreparation(spec.Onnx, spec.MaxPixels, _tensors));
    }

    /// <summary>Live counters, for a progress display.</summary>
    public PoolMonitor Monitor { get; }

    /// <summary>Runs the job to the end of the input (or until <paramref name="stopIntake"/> ends it early).</summary>
    /// <param name="stopIntake">Stops taking new input; what is in flight still finishes and is committed.</param>
    /// <param name="cancellationToken">Stops now; only committed parts remain.</param>
    /// <exception cref="InferencePoolException">The job as a whole failed (no replica could start, the input could not be read).</exception>
    public async Task<JobSummary> RunAsync(CancellationToken stopIntake, CancellationToken cancellationToken)
    {
        var columns = _spec.Onnx.Outputs.Select(o => _spec.Model.ColumnFor(o.Name)).ToArray();
        var identity = new JobIdentity(_spec.Model.Name, _spec.Onnx.Sha256, _spec.Input.FullPath, _spec.Format.Name, columns);
        var start = await OutputFolder.OpenAsync(_spec.OutputDirectory, identity, _spec.Force, _spec.RequireResume, cancellationToken).ConfigureAwait(false);
        if (start.Journal.Finished)
        {
            // Nothing left to do; no replica is built.
            return new JobSummary(0, 0, TimeSpan.Zero, Monitor.Snapshot(), [], [], new Dictionary<string, int>(), [], Interrupted: false, Skipped: start.CommittedKeys.Count, Resumed: true, start.Discarded, StoppedOnFailure: false, start.CommittedFailures, AlreadyComplete: true);
        }

        var writer = new PartWriter(_spec.OutputDirectory, start.Journal, _spec.Format, columns, _spec.RowsPerPart);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(stopIntake);
        using var factory = new OnnxReplicaFactory(_spec.Onnx, new OnnxReplicaOptions { IntraOpThreads = _spec.IntraOpThreads });
        var options = new InferencePoolOptions
        {
            Replicas = _spec.Plan,
            MaxInFlight = InFlight(_spec),
            MaxBatchSize = _spec.BatchSize,
            PrepareParallelism = _spec.PrepareWorkers,
            BatchTimeout = _spec.BatchTimeout,
            Order = ResultOrder.Input,
            Monitor = Monitor,
            Logger = _logger,
            TimeProvider = _timeProvider,
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
        var prepare = new PrepareStage<InputItem, float[]>(Prepare) { Release = _tensors.Return };
        await foreach (var result in InferencePool.RunAsync(input, prepare, factory, options, cancellationToken).ConfigureAwait(false))
        {
            items++;
            if (!result.IsSuccess)
            {
                failed++;
                var reason = result.Error!.ToString();
                if (firstFailures.Count < JobSummary.FailuresListed)
                {
                    firstFailures.Add((result.Item.Key, reason));
                }

                byReason[result.Error.Type] = byReason.GetValueOrDefault(result.Error.Type) + 1;
                if (_spec.FailFast)
                {
                    // Stop taking input; what is in flight still finishes and is committed.
                    await stop.CancelAsync().ConfigureAwait(false);
                }
            }

            await writer.AddAsync(ToRow(result), cancellationToken).ConfigureAwait(false);
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
            factory.Replicas,
            stopIntake.IsCancellationRequested,
            skipped,
            start.Resumed,
            start.Discarded,
            stoppedEarly && !stopIntake.IsCancellationRequested,
            start.CommittedFailures);
    }

    /// <summary>Items in flight: enough to keep every replica fed and the decoders ahead, few enough that memory stays small.</summary>
    private static int InFlight(JobSpec spec) => Math.Max(32, 4 * spec.Plan.TotalReplicas * spec.BatchSize);

    private ValueTask<float[]> Prepare(InputItem item, CancellationToken cancellationToken)
    {
        if (item.Error is not null)
        {
            throw new InvalidDataException(item.Error);
        }

        if (item.Tensor is { } tensor)
        {
            var expected = _spec.Onnx.Input.ItemLength;
            return tensor.Length == expected
                ? ValueTask.FromResult(tensor)
                : throw new InvalidDataException($"The record's input has {tensor.Length} values; model input {_spec.Onnx.Input} takes {expected} per item.");
        }

        return ValueTask.FromResult(_images.Value.PrepareFile(item.Path!));
    }

    private static ResultRow ToRow(in InferenceResult<InputItem, float[][]> result) => new(
        result.Item.Key,
        result.IsSuccess,
        result.Error?.ToString(),
        result.Value,
        result.Device?.ToString(),
        result.Replica?.Name,
        result.Attempts);

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
}
