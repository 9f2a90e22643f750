namespace InferPool.Jobs.Parts;

/// <summary>A column of model output in the parts: a list of floats, or (for worker outputs kept as they are) JSON text.</summary>
/// <param name="Name">The column's name.</param>
/// <param name="IsJson">True when the column holds each item's output as JSON text.</param>
public sealed record OutputColumn(string Name, bool IsJson = false)
{
    /// <summary>How the column appears in the job journal and in messages: <c>embedding</c>, <c>output (json)</c>.</summary>
    public override string ToString() => IsJson ? $"{Name} (json)" : Name;
}
