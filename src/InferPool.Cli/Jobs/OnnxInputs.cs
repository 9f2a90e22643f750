using InferPool.Cli.Images;
using InferPool.Cli.Inputs;

namespace InferPool.Cli.Jobs;

/// <summary>
/// Turns an input into the model's input tensor: an image file decoded and normalised for the model, or a
/// record's tensor checked for length. Shared by <c>run</c>, <c>tune</c> and <c>bench</c>, so all three
/// measure and do the same work.
/// </summary>
internal sealed class OnnxInputs
{
    private readonly OnnxEngine _engine;
    private readonly Lazy<ImagePreprocessor> _images;

    /// <param name="engine">The model.</param>
    /// <param name="maxPixels">Images with more pixels are refused from their header.</param>
    /// <param name="tensors">Where image tensors come from (and go back to after their result), or null to allocate each.</param>
    public OnnxInputs(OnnxEngine engine, long maxPixels, TensorPool? tensors = null)
    {
        _engine = engine;
        _images = new(() => engine.Model.ImagePreparation(engine.Onnx, maxPixels, tensors));
    }

    /// <summary>The model input for an item.</summary>
    /// <exception cref="InvalidDataException">The item is unusable (bad record, wrong tensor length, undecodable image).</exception>
    public float[] Prepare(InputItem item)
    {
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

        return _images.Value.PrepareFile(item.Path!);
    }
}
