namespace InferPool.Replicas;

/// <summary>
/// Thrown by a replica when its device ran out of memory for a batch (a worker process that reported it, a model
/// runtime whose own error does not say so in words the pool recognises). The pool halves that replica's batch
/// limit and runs the batch in pieces; one item that does not fit alone rebuilds the replica
/// (<see cref="FaultKind.OutOfMemory"/>).
/// </summary>
public class DeviceOutOfMemoryException : Exception
{
    /// <summary>Creates the exception.</summary>
    public DeviceOutOfMemoryException()
        : base("The device ran out of memory.")
    {
    }

    /// <summary>Creates the exception with a reason.</summary>
    /// <param name="message">What ran out, and where.</param>
    public DeviceOutOfMemoryException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a reason and its cause.</summary>
    /// <param name="message">What ran out, and where.</param>
    /// <param name="innerException">The cause.</param>
    public DeviceOutOfMemoryException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
