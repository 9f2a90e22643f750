namespace InferPool.Onnx.Tensors;

/// <summary>
/// How <see cref="OnnxTensorReplicaFactory"/> makes model calls from a batch of items whose shapes differ in a dimension
/// other than the batch (a sequence length, say).
/// </summary>
/// <remarks>
/// Items that agree on every dimension run together. Items that differ are padded to the longest only where that is
/// safe to undo: every input with a symbolic dimension has a pad value here, and every symbolic dimension of every
/// output shares its name with an input's (so each item's outputs are cut back to its own size). Otherwise items run
/// in groups of equal shape. Padded items are sorted by length first and cut into calls of at most
/// <see cref="MaxBatchTokens"/>, so that short items are not padded to a long one. Results keep the items' order.
/// <list type="table">
/// <listheader><term>option</term><description>default</description></listheader>
/// <item><term><see cref="PadValues"/></term><description>empty: never pad</description></item>
/// <item><term><see cref="MaxBatchTokens"/></term><description>null: no cap</description></item>
/// </list>
/// </remarks>
public sealed class TensorBatching
{
    /// <summary>The value that pads each input, by input name (0 for token ids and attention masks).</summary>
    public IReadOnlyDictionary<string, double> PadValues { get; init; } = new Dictionary<string, double>(StringComparer.Ordinal);

    /// <summary>
    /// The most "tokens" in one model call: rows × the padded length, where an item's length is the product of its
    /// symbolic dimensions other than the batch (its token count, for a text model). An item longer than the cap runs
    /// alone. Null: no cap; a call takes the whole batch (or group).
    /// </summary>
    public int? MaxBatchTokens { get; init; }

    /// <summary>
    /// Reducers for float outputs, by output name: each gets one item's part of the output where ONNX Runtime left it
    /// (its rows along the first item dimension, <c>count</c> of them, <c>width</c> values each; padding already cut
    /// off) and returns what the item keeps, so a large output (a text model's token vectors) is never copied per item.
    /// Used for items without a batch dimension; other items, and other outputs, are copied as they are.
    /// </summary>
    public IReadOnlyDictionary<string, FloatRowsReducer> Reducers { get; init; } = new Dictionary<string, FloatRowsReducer>(StringComparer.Ordinal);
}

/// <summary>Reduces one item's rows of a float output (e.g. mean pooling of token vectors) to the values it keeps.</summary>
/// <param name="rows">The item's rows, end to end: <paramref name="count"/> × <paramref name="width"/> values.</param>
/// <param name="count">How many rows (the item's own length).</param>
/// <param name="width">Values per row.</param>
public delegate float[] FloatRowsReducer(ReadOnlySpan<float> rows, int count, int width);
