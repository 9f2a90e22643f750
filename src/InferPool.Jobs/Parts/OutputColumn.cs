using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Jobs.Parts;

/// <summary>
/// A column of model output in the parts: a list of numbers (or booleans) per row, or (for worker outputs kept as they
/// are) JSON text.
/// </summary>
/// <param name="Name">The column's name.</param>
/// <param name="IsJson">True when the column holds each item's output as JSON text.</param>
public sealed record OutputColumn(string Name, bool IsJson = false)
{
    /// <summary>
    /// The element type of the values: float (float16 is stored as float), double, int64, int32 (int8 and uint8 are
    /// stored as int32) or bool.
    /// </summary>
    public TensorElementType ElementType { get; init; } = TensorElementType.Float;

    /// <summary>
    /// One item's shape, without the batch dimension; -1 where it varies between items (each row then stores its own
    /// shape). Null when unknown (a worker's vectors), which stores the values flat.
    /// </summary>
    public IReadOnlyList<long>? ItemShape { get; init; }

    /// <summary>True when rows may differ in shape, so each row's shape is stored with it.</summary>
    public bool HasRowShapes => ItemShape is { } shape && shape.Any(d => d < 0);

    /// <summary>How the column appears in the job journal and in messages: <c>embedding</c>, <c>labels (int64)</c>, <c>output (json)</c>.</summary>
    public override string ToString() => IsJson ? $"{Name} (json)" : ElementType == TensorElementType.Float ? Name : $"{Name} ({ElementType.ToString().ToLowerInvariant()})";
}
