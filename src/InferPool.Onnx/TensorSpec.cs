using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Onnx;

/// <summary>A model input or output as the model declares it.</summary>
/// <param name="Name">The tensor's name in the graph.</param>
/// <param name="ElementType">The element type.</param>
/// <param name="Shape">The dimensions; -1 where a dimension is symbolic (the batch dimension, usually).</param>
public sealed record TensorSpec(string Name, TensorElementType ElementType, IReadOnlyList<long> Shape)
{
    /// <summary>
    /// The symbolic name of each dimension ("batch", "sequence"), or an empty string where the model names none.
    /// Inputs and outputs that share a name share the dimension's size, which is how padding is undone in outputs.
    /// </summary>
    public IReadOnlyList<string> DimensionNames { get; init; } = [];

    /// <summary>The dimensions of one item: the shape without its first (batch) dimension.</summary>
    public IReadOnlyList<long> ItemShape => [.. Shape.Skip(1)];

    /// <summary>True when every dimension of one item is known.</summary>
    public bool ItemShapeIsFixed => ItemShape.All(d => d > 0);

    /// <summary>Values in one item; 0 when some item dimension is symbolic.</summary>
    public int ItemLength => ItemShapeIsFixed ? checked((int)ItemShape.Aggregate(1L, (a, d) => a * d)) : 0;

    /// <summary>The symbolic name of dimension <paramref name="dimension"/>, or null when it has none or is fixed.</summary>
    /// <param name="dimension">The dimension, counted from 0 (the batch dimension).</param>
    public string? DimensionName(int dimension) =>
        dimension < Shape.Count && Shape[dimension] < 0 && dimension < DimensionNames.Count && DimensionNames[dimension].Length > 0 ? DimensionNames[dimension] : null;

    /// <summary>The shape as text, e.g. <c>[N,3,224,224]</c> or <c>[N,sequence]</c>.</summary>
    public string ShapeText => "[" + string.Join(",", Shape.Select((d, i) => d >= 0 ? d.ToString(System.Globalization.CultureInfo.InvariantCulture) : i == 0 ? "N" : DimensionName(i) ?? "?")) + "]";

    /// <inheritdoc />
    public override string ToString() => $"{Name} {ElementType} {ShapeText}";
}
