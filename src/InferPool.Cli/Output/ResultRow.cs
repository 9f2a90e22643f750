namespace InferPool.Cli.Output;

/// <summary>One output row: an item's key, status, reason, model outputs, and where it ran.</summary>
internal sealed record ResultRow(string Key, bool Ok, string? Error, float[][]? Outputs, string? Device, string? Replica, int Attempts)
{
    public string Status => Ok ? "ok" : "failed";
}
