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
}
