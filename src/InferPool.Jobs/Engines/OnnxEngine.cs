using InferPool.Images;
using InferPool.Jobs.Parts;
using InferPool.Onnx;
using InferPool.Onnx.Tensors;
using Microsoft.Extensions.Logging;

namespace InferPool.Jobs.Engines;

/// <summary>A model run by ONNX Runtime in this process, on image files or tensor records: one session per replica.</summary>
public sealed class OnnxEngine : JobEngine
{
    /// <summary>Wraps a loaded model.</summary>
    /// <param name="model">Which model it is and how to feed it.</param>
    /// <param name="onnx">The model, loaded.</param>
    public OnnxEngine(ModelChoice model, OnnxModel onnx)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(onnx);
        Model = model;
        Onnx = onnx;
        FeedsImages = onnx.IsSingleFloatInput && ModelChoice.IsImageInput(onnx.Input);
        Columns = FeedsImages
            ? [.. onnx.Outputs.Select(o => new OutputColumn(model.ColumnFor(o.Name)))]
            : [.. onnx.Outputs.Select(o => TensorRecords.Column(o, model.ColumnFor(o.Name)))];
    }

    /// <summary>
    /// True for an image model (one float input [N,3,S,S], float outputs): it takes image files, and records of one item
    /// each, through pooled flat float buffers, and writes each output flattened. Any other model takes JSONL records of
    /// named tensors and writes each output in the item's shape.
    /// </summary>
    public bool FeedsImages { get; }

    /// <summary>Which model it is and how to feed it images.</summary>
    public ModelChoice Model { get; }

    /// <summary>The loaded model: inputs, outputs, batching.</summary>
    public OnnxModel Onnx { get; }

    /// <inheritdoc/>
    public override string Name => Model.Name;

    /// <inheritdoc/>
    public override string Fingerprint => Onnx.Sha256;

    /// <inheritdoc/>
    public override IReadOnlyList<OutputColumn> Columns { get; }

    /// <inheritdoc/>
    public override int? MaxBatchSize => Onnx.MaxBatchSize;

    /// <summary>Resolves <paramref name="model"/> (<c>resnet18</c> or a path) and loads it, checking its batch dimension.</summary>
    /// <param name="model"><see cref="ModelChoice.BuiltInName"/> or the path of an .onnx file.</param>
    /// <param name="logger">Where notes about the model's batching go.</param>
    /// <exception cref="FileNotFoundException">The model is missing.</exception>
    /// <exception cref="NotSupportedException">The model's inputs cannot be fed.</exception>
    public static OnnxEngine Load(string model, ILogger? logger = null)
    {
        var choice = ModelChoice.Resolve(model);
        return new OnnxEngine(choice, OnnxModel.Load(choice.Path, logger));
    }

    /// <inheritdoc/>
    public override string Describe() => Onnx.BatchingReport;

    /// <summary>
    /// For table inputs (CSV, Parquet): the columns each model input is read from, by input name; one column is the
    /// input's value, several are one item's vector. Null reads records' <c>"inputs"</c> (or <c>"input"</c>) field.
    /// </summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>>? InputColumns { get; init; }

    /// <summary>
    /// The columns each input reads from a table with <paramref name="tableColumns"/>: those <paramref name="given"/>
    /// (input → columns), else, for a model with one input, every column but the key, else the column named as the input.
    /// </summary>
    /// <param name="given">Columns given per input (may be empty).</param>
    /// <param name="tableColumns">The table's columns.</param>
    /// <param name="keyColumn">The key column, never an input.</param>
    /// <param name="table">The table's path, for messages.</param>
    /// <exception cref="InvalidDataException">A column is not in the table, or an input has none; the message names it and the file.</exception>
    public IReadOnlyDictionary<string, IReadOnlyList<string>> MapColumns(IReadOnlyDictionary<string, IReadOnlyList<string>> given, IReadOnlyList<string> tableColumns, string? keyColumn, string table)
    {
        ArgumentNullException.ThrowIfNull(given);
        ArgumentNullException.ThrowIfNull(tableColumns);
        var map = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
        foreach (var (input, columns) in given)
        {
            map[Onnx.Inputs.Any(i => i.Name == input) ? input : throw new InvalidDataException($"Columns are given for '{input}', which is not an input of {Name}; its inputs are {string.Join(", ", Onnx.Inputs.Select(i => i.Name))}.")] = columns;
        }

        foreach (var input in Onnx.Inputs.Where(i => !map.ContainsKey(i.Name)))
        {
            map[input.Name] = Onnx.Inputs.Count == 1
                ? [.. tableColumns.Where(c => c != keyColumn)]
                : tableColumns.Contains(input.Name, StringComparer.Ordinal)
                    ? [input.Name]
                    : throw new InvalidDataException($"Model input {input.Name} has no column in {table} (its columns are {string.Join(", ", tableColumns)}); name one for it.");
        }

        foreach (var column in map.Values.SelectMany(c => c))
        {
            if (!tableColumns.Contains(column, StringComparer.Ordinal))
            {
                throw new InvalidDataException($"Column '{column}' is not in {table}; its columns are {string.Join(", ", tableColumns)}.");
            }
        }

        return map;
    }

    /// <summary>How items of different shapes share calls; for a model of any inputs. The base engine never pads.</summary>
    public TensorBatching TensorBatching { get; init; } = new();

    /// <inheritdoc/>
    public override EngineSession OpenSession(EngineSessionOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        var replicaOptions = new OnnxReplicaOptions { IntraOpThreads = options.IntraOpThreads, Gpus = options.Gpus, GpuMemoryHeadroom = options.GpuHeadroom };
        if (!FeedsImages)
        {
            var tensorInputs = new OnnxInputs(this, options.MaxPixels);
            var tensorFactory = new OnnxTensorReplicaFactory(Onnx, replicaOptions, TensorBatching);
            return new PooledSession<TensorItem, TensorOutputs>(
                tensorFactory,
                tensorInputs.PrepareTensors,
                null,
                r => PooledSession<TensorItem, TensorOutputs>.Row(r, r.Value?.Values, truncated: r.Value?.Truncated ?? false),
                () => Usage(tensorFactory.Replicas),
                options.KeepReplicas,
                tensorFactory.Dispose);
        }

        // Enough idle arrays for everything that can be in flight: prepared, queued, or in a batch.
        var tensors = options.TensorCapacity > 0 && Onnx.Input.ItemLength > 0 ? new TensorPool(Onnx.Input.ItemLength, options.TensorCapacity) : null;
        var inputs = new OnnxInputs(this, options.MaxPixels, tensors);
        var factory = new OnnxReplicaFactory(Onnx, replicaOptions);
        return new PooledSession<float[], float[][]>(
            factory,
            inputs.Prepare,
            tensors is null ? null : tensors.Return,
            r => PooledSession<float[], float[][]>.Row(r, r.Value),
            () => Usage(factory.Replicas),
            options.KeepReplicas,
            factory.Dispose);
    }

    private static ReplicaUsage[] Usage(IEnumerable<OnnxReplicaInfo> replicas) =>
        [.. replicas.Select(r => new ReplicaUsage(r.Replica, $"{r.IntraOpThreads} thread(s)", r.ResidentBytes))];
}
