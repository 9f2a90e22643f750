namespace InferPool.Results;

/// <summary>
/// What a replica produced for one item: a value, or the reason the item failed. A replica returns one
/// outcome per item, so one bad item never costs the rest of its batch.
/// </summary>
/// <typeparam name="T">The value type.</typeparam>
/// <remarks>Create one with <see cref="Outcome.Success{T}(T)"/> or <see cref="Outcome.Failure{T}(ItemError)"/>.</remarks>
public readonly struct Outcome<T>
{
    private Outcome(T? value, ItemError? error)
    {
        Value = value;
        Error = error;
    }

    /// <summary>The value; default when <see cref="IsSuccess"/> is false.</summary>
    public T? Value { get; }

    /// <summary>The failure; null on success.</summary>
    public ItemError? Error { get; }

    /// <summary>True when the item has a value.</summary>
    public bool IsSuccess => Error is null;

    internal static Outcome<T> Success(T value) => new(value, null);

    internal static Outcome<T> Failure(ItemError error)
    {
        ArgumentNullException.ThrowIfNull(error);
        return new(default, error);
    }

    /// <inheritdoc />
    public override string ToString() => IsSuccess ? $"ok {Value}" : $"failed {Error}";
}
