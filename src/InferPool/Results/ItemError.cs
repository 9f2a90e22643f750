namespace InferPool.Results;

/// <summary>
/// Why one item failed: the exception's type and message, and the stage it failed in.
/// Failures are data: the job goes on and every other item still gets its result.
/// </summary>
public sealed class ItemError
{
    /// <summary>Creates an error from its parts.</summary>
    /// <param name="type">A short type name, e.g. <c>InvalidDataException</c>.</param>
    /// <param name="message">The reason, for people.</param>
    /// <param name="stage">The stage the item failed in.</param>
    /// <param name="exception">The exception, when there was one in this process.</param>
    public ItemError(string type, string message, FailureStage stage, Exception? exception = null)
    {
        ArgumentNullException.ThrowIfNull(type);
        ArgumentNullException.ThrowIfNull(message);
        Type = type;
        Message = message;
        Stage = stage;
        Exception = exception;
    }

    /// <summary>A short type name, e.g. <c>InvalidDataException</c>.</summary>
    public string Type { get; }

    /// <summary>The reason, for people.</summary>
    public string Message { get; }

    /// <summary>The stage the item failed in.</summary>
    public FailureStage Stage { get; }

    /// <summary>The exception, when there was one in this process (not for errors reported by a worker process).</summary>
    public Exception? Exception { get; }

    /// <summary>An error from an exception; the message of an inner exception is kept when the outer one only wraps it.</summary>
    public static ItemError FromException(Exception exception, FailureStage stage)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var root = exception is AggregateException { InnerExceptions.Count: 1 } agg ? agg.InnerExceptions[0] : exception;
        return new ItemError(root.GetType().Name, root.Message, stage, root);
    }

    /// <inheritdoc />
    public override string ToString() => $"{Type}: {Message}";
}
