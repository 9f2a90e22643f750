using InferPool.Onnx.Tensors;
using InferPool.Devices;
using InferPool.Replicas;

namespace InferPool.Onnx;

/// <summary>
/// Builds ONNX Runtime replicas for any model <see cref="OnnxModel.Load"/> accepts: any number of inputs and outputs of
/// the supported element types, symbolic dimensions anywhere. An item is a <see cref="TensorItem"/> (a tensor per input);
/// its result is a <see cref="TensorOutputs"/> (its part of every output). Items whose other dimensions differ are padded
/// or grouped as <see cref="TensorBatching"/> says. One session per replica, on its own thread, CPU or CUDA.
/// </summary>
/// <remarks>Dispose the factory after the job: it owns the pre-packed weights its CPU sessions share.</remarks>
public sealed class OnnxTensorReplicaFactory : IReplicaFactory<TensorItem, TensorOutputs>, IWarmUpInputs<TensorItem>, IDisposable
{
    private readonly SessionBuilder _builder;
    private readonly IReplicaFactory<TensorItem, TensorOutputs> _inner;

    /// <summary>Creates a factory for a model.</summary>
    /// <param name="model">The checked model.</param>
    /// <param name="options">How sessions are built; null for the defaults.</param>
    /// <param name="batching">How items of different shapes share calls; null never pads.</param>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public OnnxTensorReplicaFactory(OnnxModel model, OnnxReplicaOptions? options = null, TensorBatching? batching = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        batching ??= new TensorBatching();
        if (batching.MaxBatchTokens is < 1)
        {
            throw new ArgumentException($"TensorBatching.MaxBatchTokens is {batching.MaxBatchTokens}; it must be null or at least 1.", nameof(batching));
        }

        if (batching.PadValues.Keys.FirstOrDefault(k => model.Inputs.All(i => i.Name != k)) is { } unknown)
        {
            throw new ArgumentException($"A pad value is given for '{unknown}', which is not an input of model '{model.Path}' (its inputs: {string.Join(", ", model.Inputs.Select(i => i.Name))}).", nameof(batching));
        }

        Model = model;
        _builder = new SessionBuilder(model, options);
        _inner = ReplicaFactory.FromBlocking<TensorItem, OnnxTensorSession, TensorOutputs>(
            slot => new OnnxTensorSession(_builder.Build(slot), model, batching),
            static (session, batch, ct) => session.Run(batch, ct));
    }

    /// <summary>The model.</summary>
    public OnnxModel Model { get; }

    /// <summary>Every replica built so far (the latest build of each slot).</summary>
    public IReadOnlyCollection<OnnxReplicaInfo> Replicas => _builder.Replicas;

    /// <inheritdoc />
    public ValueTask<IReplica<TensorItem, TensorOutputs>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default) =>
        _inner.CreateAsync(slot, cancellationToken);

    /// <inheritdoc />
    /// <remarks>Null when an input's item shape is not fixed (a text model's sequence length): no size would stand for the job's.</remarks>
    public IReadOnlyList<TensorItem>? WarmUpBatch(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        if (!Model.Inputs.All(i => i.ItemShapeIsFixed))
        {
            return null;
        }

        var item = new TensorItem([.. Model.Inputs.Select(i => new TensorData(i.ElementType, [.. i.ItemShape], TensorData.NewArray(i.ElementType, i.ItemLength)))]);
        return Enumerable.Repeat(item, batchSize).ToArray();
    }

    /// <inheritdoc />
    public void Dispose() => _builder.Dispose();
}
