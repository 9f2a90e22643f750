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
}
