using InferPool.Devices;
using InferPool.Replicas;
using Microsoft.ML.OnnxRuntime;

namespace InferPool.Onnx;

/// <summary>
/// Builds ONNX Runtime replicas for a model with one float input of fixed item shape (<see cref="OnnxModel.IsSingleFloatInput"/>,
/// such as an image model): one <see cref="InferenceSession"/> per replica, CPU or CUDA, each on its own thread. The input
/// of an item is its flattened float tensor (the model input's item shape); its output is one flattened float array per
/// model output, in <see cref="OnnxModel.Outputs"/> order. Input and output buffers are pinned and reused across calls.
/// Any other model runs through <see cref="OnnxTensorReplicaFactory"/>.
/// </summary>
/// <remarks>
/// Sessions are built one at a time, with freed heap pages given back after each, so that each replica's
/// resident memory can be measured (<see cref="Replicas"/>); CPU sessions share one pre-packed weights container. Dispose the factory
/// after the job: it owns that container.
/// </remarks>
public sealed class OnnxReplicaFactory : IReplicaFactory<float[], float[][]>, IWarmUpInputs<float[]>, IDisposable
{
    private readonly SessionBuilder _builder;
    private readonly IReplicaFactory<float[], float[][]> _inner;

    /// <summary>Creates a factory for a model.</summary>
    /// <param name="model">The checked model; one float input with a fixed item shape, float outputs.</param>
    /// <param name="options">How sessions are built; null for the defaults.</param>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    /// <exception cref="NotSupportedException">The model is not <see cref="OnnxModel.IsSingleFloatInput"/>.</exception>
    public OnnxReplicaFactory(OnnxModel model, OnnxReplicaOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (!model.IsSingleFloatInput)
        {
            throw new NotSupportedException(
                $"Model '{model.Path}' has inputs {string.Join(", ", model.Inputs)} and outputs {string.Join(", ", model.Outputs)}; this factory feeds one float input of fixed item shape to float outputs. Use OnnxTensorReplicaFactory.");
        }

        Model = model;
        _builder = new SessionBuilder(model, options);
        _inner = ReplicaFactory.FromBlocking<float[], OnnxSession, float[][]>(
            slot => new OnnxSession(_builder.Build(slot), model),
            static (session, batch, ct) => session.Run(batch, ct));
    }

    /// <summary>The model.</summary>
    public OnnxModel Model { get; }

    /// <summary>Every replica built so far (the latest build of each slot).</summary>
    public IReadOnlyCollection<OnnxReplicaInfo> Replicas => _builder.Replicas;

    /// <inheritdoc />
    public ValueTask<IReplica<float[], float[][]>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default) =>
        _inner.CreateAsync(slot, cancellationToken);

    /// <inheritdoc />
    public IReadOnlyList<float[]>? WarmUpBatch(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var zeros = new float[Model.Input.ItemLength]; // read only: every item may be the same array
        return Enumerable.Repeat(zeros, batchSize).ToArray();
    }

    /// <inheritdoc />
    public void Dispose() => _builder.Dispose();
}
