using InferPool.Images;
using InferPool.Jobs.Inputs;
using InferPool.Onnx.Tensors;

namespace InferPool.Jobs.Engines;

/// <summary>
/// Turns an input into the model's input: an image file decoded and normalised for an image model, or a record's named
/// tensors read against the model's inputs. Shared by jobs, tuning and benchmarks, so all of them measure and do the
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

    /// <summary>The input tensor of an image model (<see cref="OnnxEngine.FeedsImages"/>) for an item: its image, or its record's one item.</summary>
    /// <param name="item">The item.</param>
    /// <exception cref="InvalidDataException">The item is unusable (bad record, wrong tensor shape, undecodable image).</exception>
    public float[] Prepare(InputItem item)
    {
        ArgumentNullException.ThrowIfNull(item);
        if (item.Error is not null)
        {
            throw new InvalidDataException(item.Error);
        }

        if (item.Record is { } record)
        {
            var tensors = TensorRecords.Read(record, _engine.Onnx, _engine.InputColumns);
            return tensors.Rows == 1
                ? tensors.Inputs[0].ToFloats()
                : throw new InvalidDataException($"The record holds {tensors.Rows} items in one tensor; an image model takes one item per record.");
        }

        return _images.Value.PrepareFile(item.Path ?? throw new InvalidDataException($"'{item.Key}' has neither a file nor a tensor."));
    }

    /// <summary>The input tensors for an item of any model: its record's named tensors.</summary>
    /// <param name="item">The item.</param>
    /// <exception cref="InvalidDataException">The item is unusable; the message names the input and the reason.</exception>
    public TensorItem PrepareTensors(InputItem item)
    {
        ArgumentNullException.ThrowIfNull(item);
        if (item.Error is not null)
        {
            throw new InvalidDataException(item.Error);
        }

        return item.Record is { } record
            ? TensorRecords.Read(record, _engine.Onnx, _engine.InputColumns)
            : throw new InvalidDataException(
                $"'{item.Key}' is a file, but model inputs {string.Join(", ", _engine.Onnx.Inputs)} are not one image: give JSONL records with \"inputs\": {{\"name\": […]}}.");
    }
}
