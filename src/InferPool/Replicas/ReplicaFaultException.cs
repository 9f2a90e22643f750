namespace InferPool.Replicas;

/// <summary>
/// Thrown by a replica to say that the replica itself is broken (a worker process died, a device was lost,
/// the model's native state is corrupt), not the items it was given. The pool disposes the replica, rebuilds
/// it through its factory with backoff, and puts the batch back in the queue.
/// </summary>
public class ReplicaFaultException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ReplicaFaultException()
        : base("The replica is broken.")
    {
    }

    /// <summary>Creates the exception with a reason.</summary>
    public ReplicaFaultException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a reason and its cause.</summary>
    public ReplicaFaultException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
