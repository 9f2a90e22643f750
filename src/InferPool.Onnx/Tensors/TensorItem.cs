namespace InferPool.Onnx.Tensors;

/// <summary>
/// One item for a model with any inputs: a tensor per model input, in the model's input order.
/// </summary>
/// <remarks>
/// Without a batch dimension (<see cref="HasBatchDimension"/> false) each tensor's rank is one less than its model
/// input's, and items are stacked into a batch along a new first dimension. With one, each tensor is a whole input,
/// batch dimension included (every tensor has the same first dimension, <see cref="Rows"/>); such items are joined
/// with others along that dimension, and their outputs keep it.
/// </remarks>
public sealed class TensorItem
{
    /// <summary>Creates an item.</summary>
    /// <param name="inputs">A tensor per model input, in the model's input order.</param>
    /// <param name="hasBatchDimension">True when each tensor includes the batch dimension.</param>
    /// <exception cref="ArgumentException">No inputs, or (with a batch dimension) tensors that disagree on it.</exception>
    public TensorItem(IReadOnlyList<TensorData> inputs, bool hasBatchDimension = false)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        if (inputs.Count == 0)
        {
            throw new ArgumentException("An item needs at least one input tensor.", nameof(inputs));
        }

        Inputs = inputs;
        HasBatchDimension = hasBatchDimension;
        if (hasBatchDimension)
        {
            if (inputs.Any(t => t.Shape.Length == 0))
            {
                throw new ArgumentException("A whole input (batch dimension included) cannot be a scalar.", nameof(inputs));
            }

            Rows = inputs[0].Shape[0];
            if (inputs.Any(t => t.Shape[0] != Rows))
            {
                throw new ArgumentException($"The inputs disagree on their batch dimension ({string.Join(", ", inputs.Select(t => t.Shape[0]))}).", nameof(inputs));
            }
        }
        else
        {
            Rows = 1;
        }
    }

    /// <summary>A tensor per model input, in the model's input order.</summary>
    public IReadOnlyList<TensorData> Inputs { get; }

    /// <summary>True when each tensor includes the batch dimension (a whole input); false for one item without it.</summary>
    public bool HasBatchDimension { get; }

    /// <summary>How many rows of the batch dimension the item takes: 1 without a batch dimension.</summary>
    public long Rows { get; }

    /// <summary>Whether preparation cut the item to fit the model (a text over the token limit); carried to its outputs.</summary>
    public bool Truncated { get; init; }

    /// <summary>The dimensions of input <paramref name="input"/> after the batch dimension.</summary>
    internal ReadOnlySpan<long> RowShape(int input) => HasBatchDimension ? Inputs[input].Shape.AsSpan(1) : Inputs[input].Shape;
}

/// <summary>An item's outputs: a tensor per model output, in the model's output order.</summary>
/// <param name="Values">The outputs. Without a batch dimension on the item, each lacks it too.</param>
/// <param name="Truncated">Whether preparation cut the item (<see cref="TensorItem.Truncated"/>).</param>
public sealed record TensorOutputs(IReadOnlyList<TensorData> Values, bool Truncated = false);
