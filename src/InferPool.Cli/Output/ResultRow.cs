namespace InferPool.Cli.Output;

/// <summary>One output row: an item's key, status, reason, model outputs, and where it ran.</summary>
/// <param name="Key">The item's key.</param>
/// <param name="Ok">Whether it succeeded.</param>
/// <param name="Error">Why it failed (type: message), when it did.</param>
/// <param name="Outputs">One float list per float column, when the item succeeded.</param>
/// <param name="Device">The device of the replica that gave the final result.</param>
/// <param name="Replica">That replica's name.</param>
/// <param name="Attempts">How many times the item was tried.</param>
/// <param name="Json">The output as JSON text, for a job whose one column is JSON.</param>
internal sealed record ResultRow(string Key, bool Ok, string? Error, float[][]? Outputs, string? Device, string? Replica, int Attempts, string? Json = null)
{
    public string Status => Ok ? "ok" : "failed";
}
