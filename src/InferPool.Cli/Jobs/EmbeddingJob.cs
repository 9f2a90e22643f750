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
internal sealed class EmbeddingJob(JobSpec spec, ILogger logger, TimeProvider timeProvider)
{
    private readonly Lazy<ImagePreprocessor> _images = new(() => spec.Model.ImagePreparation(spec.Onnx, spec.MaxPixels));

    /// <summary>Live counters, for a progress display.</summary>
    public PoolMonitor Monitor { get; } = new(timeProvider);

    /// <summary>Runs the job to the end of the input (or until <paramref name="stopIntake"/> ends it early).</summary>
    /// <param name="stopIntake">Stops taking new input; what is in flight still finishes and is committed.</param>
    /// <param name="cancellationToken">Stops now; only committed parts remain.</param>
    /// <exception cref="InferencePoolException">The job as a whole failed (no replica could start, the input could not be read).</exception>
    public async Task<JobSummary> RunAsync(CancellationToken stopIntake, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(spec.OutputDirectory);
        PartWriter.RemovePreviousParts(spec.OutputDirectory, spec.Format);
        var columns = spec.Onnx.Outputs.Select(o => spec.Model.ColumnFor(o.Name)).ToArray();
        var writer = new PartWriter(spec.OutputDirectory, spec.Format, columns, spec.RowsPerPart);
        using var factory = new OnnxReplicaFactory(spec.Onnx, new OnnxReplicaOptions { IntraOpThreads = spec.IntraOpThreads });
        var options = new InferencePoolOptions
        {
            Replicas = spec.Plan,
            MaxBatchSize = spec.BatchSize,
            PrepareParallelism = spec.PrepareWorkers,
            BatchTimeout = spec.BatchTimeout,
            Order = ResultOrder.Input,
            Monitor = Monitor,
            Logger = logger,
            TimeProvider = timeProvider,
        };

        var started = timeProvider.GetTimestamp();
        long items = 0;
        long failed = 0;
        var firstFailures = new List<(string, string)>();
        var byReason = new Dictionary<string, int>(StringComparer.Ordinal);
        var input = StopWhen(spec.Input.ReadAsync(cancellationToken), stopIntake);
        await foreach (var result in InferencePool.RunAsync(input, Prepare, factory, options, cancellationToken).ConfigureAwait(false))
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
            }

            await writer.AddAsync(ToRow(result), cancellationToken).ConfigureAwait(false);
        }

        await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        return new JobSummary(
            items,
            failed,
            timeProvider.GetElapsedTime(started),
            Monitor.Snapshot(),
            writer.Parts,
            firstFailures,
            byReason,
            factory.Replicas,
            stopIntake.IsCancellationRequested);
    }

    private ValueTask<float[]> Prepare(InputItem item, CancellationToken cancellationToken)
    {
        if (item.Error is not null)
        {
            throw new InvalidDataException(item.Error);
        }

        if (item.Tensor is { } tensor)
        {
            var expected = spec.Onnx.Input.ItemLength;
            return tensor.Length == expected
                ? ValueTask.FromResult(tensor)
                : throw new InvalidDataException($"The record's input has {tensor.Length} values; model input {spec.Onnx.Input} takes {expected} per item.");
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
