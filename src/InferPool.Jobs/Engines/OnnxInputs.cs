using InferPool.Images;
using InferPool.Jobs.Inputs;

namespace InferPool.Jobs.Engines;

/// <summary>
/// Turns an input into the model's input tensor: an image file decoded and normalised for the model, or a
/// record's tensor checked for length. Shared by jobs, tuning and benchmarks, so all of them measure and do the
/// same work. Thread-safe.
/// </summary>
public sealed class OnnxInputs
{
    private readonly OnnxEngine _engine;
    private readonly Lazy<ImagePreprocessor> _images;

    /// <summary>Prepares inputs for <paramref name="engine"/>'s model.</summary>
    /// <param name="engine">The model.</param>
    /// <param name="maxPixels">Images with more pixels are refused from their header.</param>
    /// <param name="tensors">Where image tensors come from (and go back to after their result), or null to allocate each.</param>
    public OnnxInputs(OnnxEngine engine, long maxPixels = ImagePreprocessor.DefaultMaxPixels, TensorPool? tensors = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        _engine = engine;
        _images = new(() => engine.Model.ImagePreparation(engine.Onnx, maxPixels, tensors));
    }

    /// <summary>The model input for an item.</summary>
    /// <param name="item">The item.</param>
    /// <exception cref="InvalidDataException">The item is unusable (bad record, wrong tensor length, undecodable image).</exception>
    public float[] Prepare(InputItem item)
    {
        ArgumentNullException.ThrowIfNull(item);
        if (item.Error is not null)
        {
            throw new InvalidDataException(item.Error);
        }

        if (item.Tensor is { } tensor)
        {
            var expected = _engine.Onnx.Input.ItemLength;
            return tensor.Length == expected
                ? tensor
                : throw new InvalidDataException($"The record's input has {tensor.Length} values; model input {_engine.Onnx.Input} takes {expected} per item.");
        }

        return _images.Value.PrepareFile(item.Path ?? throw new InvalidDataException($"'{item.Key}' has neither a file nor a tensor."));
    }
}
