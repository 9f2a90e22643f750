using System.Text.Json;

namespace InferPool.Processes;

/// <summary>One item for a worker process: its key and its input as any JSON value (a path, a record, numbers).</summary>
/// <param name="Key">The item's key, sent along so the worker can log it.</param>
/// <param name="Input">The input.</param>
public sealed record WorkerInput(string Key, JsonElement Input);
