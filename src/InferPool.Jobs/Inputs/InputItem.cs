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

    /// <summary>
    /// Where the item's line starts in its file, for a line-based input (a list, a JSONL or a text file); null for a
    /// folder's files and table rows. <see cref="InputSource.ReadAsync(long, long?, RecordPosition, CancellationToken)"/>
    /// starts reading there without reading what comes before.
    /// </summary>
    public RecordPosition? Position { get; init; }

    /// <summary>An item that fails with <paramref name="error"/>.</summary>
    /// <param name="key">Its key.</param>
    /// <param name="error">Why it is unusable.</param>
    public static InputItem Unusable(string key, string error) => new() { Key = key, Error = error };
}

/// <summary>Where a record's line starts in a line-based input file.</summary>
/// <param name="Offset">The byte offset of the line's first byte.</param>
/// <param name="LinesBefore">How many lines (records, blank lines and comments) come before it.</param>
public readonly record struct RecordPosition(long Offset, long LinesBefore);
