using InferPool.Devices;

namespace InferPool.Results;

/// <summary>
/// The result of one input item: its index and the item itself, the value or the failure, the replica that
/// ran it, and how many attempts it took.
/// </summary>
/// <typeparam name="TIn">The input item type (the item as given to the pool, before any prepare stage).</typeparam>
/// <typeparam name="TOut">The model's per-item output type.</typeparam>
public readonly struct InferenceResult<TIn, TOut>
{
    internal InferenceResult(long index, TIn item, Outcome<TOut> outcome, ReplicaSlot? replica, int attempts)
    {
        Index = index;
        Item = item;
        Value = outcome.Value;
        Error = outcome.Error;
        Replica = replica;
        Attempts = attempts;
    }

    /// <summary>The item's position in the input, from 0.</summary>
    public long Index { get; }

    /// <summary>The input item (its key: a path, a record id, …).</summary>
    public TIn Item { get; }

    /// <summary>The model's output for the item; default when the item failed.</summary>
    public TOut? Value { get; }

    /// <summary>Why the item failed; null on success.</summary>
    public ItemError? Error { get; }

    /// <summary>True when the item has a value.</summary>
    public bool IsSuccess => Error is null;

    /// <summary>The replica that ran the item last; null when it never reached one (it failed in the prepare stage).</summary>
    public ReplicaSlot? Replica { get; }

    /// <summary>The device that ran the item last, if any.</summary>
    public Device? Device => Replica?.Device;

    /// <summary>
    /// Tries that counted: 1, plus one for each time the item alone broke or timed out a replica and was
    /// retried. Items that were merely in a batch that had to be split are not charged.
    /// </summary>
    public int Attempts { get; }

    /// <inheritdoc />
    public override string ToString() => IsSuccess
        ? $"#{Index} ok on {Replica}"
        : $"#{Index} failed ({Error}) after {Attempts} attempt(s)";
}
