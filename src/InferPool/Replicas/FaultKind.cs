namespace InferPool.Replicas;

/// <summary>How the pool treats an exception thrown by a replica's batch call.</summary>
public enum FaultKind
{
    /// <summary>
    /// The items are at fault. A batch is split in halves on the same replica until the bad item is alone;
    /// that item fails at once and the others succeed.
    /// </summary>
    Item = 0,

    /// <summary>Like <see cref="Item"/>, but a lone item is retried until it has had <see cref="InferencePoolOptions.MaxAttempts"/> attempts.</summary>
    Transient = 1,

    /// <summary>
    /// The replica is broken: it is disposed and rebuilt, and its batch goes back to the queue in halves, so a
    /// poison item ends up alone and fails after <see cref="InferencePoolOptions.MaxAttempts"/> attempts.
    /// </summary>
    Replica = 2,

    /// <summary>
    /// The device ran out of memory for this batch: the replica's batch limit is halved and the batch retried in
    /// pieces of the new limit, down to one item; an item that still does not fit rebuilds the replica (as
    /// <see cref="Replica"/>). Each step is logged and raised as a replica event.
    /// </summary>
    OutOfMemory = 3,
}
