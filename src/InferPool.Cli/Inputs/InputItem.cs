using System.Text.Json;

namespace InferPool.Cli.Inputs;

/// <summary>One input of a run: a key for the output, and an image path or a tensor (or why the input is unusable).</summary>
/// <param name="Key">The row's key: a path relative to the input folder, a list line, or a record's key.</param>
/// <param name="Path">The image file to read, if the input is an image.</param>
/// <param name="Tensor">The model input itself, if the record carried one.</param>
/// <param name="Error">Why the input cannot be used (a malformed record); the item fails with this reason.</param>
/// <param name="Record">The whole JSONL record, for a source opened for worker processes (which get records as they are).</param>
internal sealed record InputItem(string Key, string? Path = null, float[]? Tensor = null, string? Error = null, JsonElement? Record = null);
