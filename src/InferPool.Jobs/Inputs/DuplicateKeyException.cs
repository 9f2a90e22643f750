namespace InferPool.Jobs.Inputs;

/// <summary>
/// Two items of an input have the same key, found before any work started (a list file is checked whole). Keys
/// must be unique for "every key exactly once" to mean anything: resuming skips by key. Nothing was run.
/// </summary>
public sealed class DuplicateKeyException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="key">The key given twice.</param>
    /// <param name="first">Where it first occurs, e.g. <c>line 3 of list.txt</c>.</param>
    /// <param name="second">Where it occurs again.</param>
    public DuplicateKeyException(string key, string first, string second)
        : base($"The key '{key}' occurs twice: at {first} and at {second}.")
    {
        Key = key;
    }

    /// <summary>Creates an exception with a message only.</summary>
    public DuplicateKeyException()
        : this("", "", "")
    {
    }

    /// <summary>Creates an exception with a message only.</summary>
    /// <param name="message">The reason.</param>
    public DuplicateKeyException(string message)
        : base(message)
    {
        Key = "";
    }

    /// <summary>Creates an exception with a message and its cause.</summary>
    /// <param name="message">The reason.</param>
    /// <param name="inner">The cause.</param>
    public DuplicateKeyException(string message, Exception inner)
        : base(message, inner)
    {
        Key = "";
    }

    /// <summary>The key given twice.</summary>
    public string Key { get; }
}
