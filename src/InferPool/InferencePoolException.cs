namespace InferPool;

/// <summary>
/// The job as a whole could not go on: no replica is left, or the input could not be read. Every result
/// that finished before this is still delivered ahead of the exception.
/// </summary>
public class InferencePoolException : Exception
{
    /// <summary>Creates the exception.</summary>
    public InferencePoolException()
        : base("The inference job failed.")
    {
    }

    /// <summary>Creates the exception with a reason.</summary>
    public InferencePoolException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a reason and its cause.</summary>
    public InferencePoolException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
