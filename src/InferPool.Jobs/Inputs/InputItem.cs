using System.Text.Json;

namespace InferPool.Jobs.Inputs;

/// <summary>One input of a job: a key for the output, and an image path, a text or a whole record (or why the input is unusable).</summary>
public sealed record InputItem
{
    /// <summary>The row's key: a path relative to the input folder, a list line, or a record's key.</summary>
    public required string Key { get; init; }

    /// <summary>The file to read, if the input is a file.</summary>
    public string? Path { get; init; }

    /// <summary>The text of the item, for a text model.</summary>
    public string? Text { get; init; }

    /// <summary>Why the input cannot be used (a malformed record); the item fails with this reason.</summary>
    public string? Error { get; init; }

    /// <summary>
    /// The whole JSONL record: for a source opened for worker processes (which get records as they are), or a record that
    /// carries its model inputs as tensors (<c>"input"</c> or <c>"inputs"</c>), which are read against the model when the
    /// item is prepared.
    /// </summary>
    public JsonElement? Record { get; init; }

    /// <summary>An item that fails with <paramref name="error"/>.</summary>
    /// <param name="key">Its key.</param>
    /// <param name="error">Why it is unusable.</param>
    public static InputItem Unusable(string key, string error) => new() { Key = key, Error = error };
}
