using InferPool.Onnx.Tensors;

namespace InferPool.Jobs.Parts;

/// <summary>One output row: an item's key, status, reason, model outputs, and where it ran.</summary>
public sealed record ResultRow
{
    /// <summary>The item's key.</summary>
    public required string Key { get; init; }

    /// <summary>The item's position in the input this run read (0 for its first item).</summary>
    public long Index { get; init; }

    /// <summary>Whether it succeeded.</summary>
    public required bool Ok { get; init; }

    /// <summary>Why it failed (<c>Type: message</c>), when it did.</summary>
    public string? Error { get; init; }

    /// <summary>The failure's kind, for counting failures by reason (an exception type name, or <c>InvalidOutput</c>).</summary>
    public string? ErrorType { get; init; }

    /// <summary>One tensor per output column (values and the item's shape), when the item succeeded and its outputs are numbers.</summary>
    public IReadOnlyList<TensorData>? Outputs { get; init; }

    /// <summary>Whether preparation cut the item to fit the model (a text over the token limit).</summary>
    public bool Truncated { get; init; }

    /// <summary>The output as JSON text, for a job whose one column is JSON.</summary>
    public string? Json { get; init; }

    /// <summary>The device of the replica that gave the final result.</summary>
    public string? Device { get; init; }

    /// <summary>That replica's name.</summary>
    public string? Replica { get; init; }

    /// <summary>How many times the item was tried.</summary>
    public int Attempts { get; init; }

    /// <summary><c>ok</c> or <c>failed</c>, as the parts store it.</summary>
    public string Status => Ok ? "ok" : "failed";
}
