using System.Globalization;

namespace InferPool.Devices;

/// <summary>
/// How many replicas fit on a GPU, from what the first one took: the memory free before it was built and
/// after its first batch, and a share of the card to keep free.
/// </summary>
/// <param name="Replicas">Replicas to run on the GPU: at least 1, at most the planned number.</param>
/// <param name="Reason">The figures behind it, for the log and the summary.</param>
public sealed record GpuReplicaCap(int Replicas, string Reason)
{
    private const double MiB = 1024.0 * 1024;

    /// <summary>Works out the cap.</summary>
    /// <param name="gpu">The GPU.</param>
    /// <param name="before">Its memory before the first replica was built.</param>
    /// <param name="after">Its memory once the first replica had run a batch.</param>
    /// <param name="planned">Replicas planned for it.</param>
    /// <param name="headroom">Share of its total memory to keep free, 0 to 1.</param>
    public static GpuReplicaCap Compute(Device gpu, GpuReading before, GpuReading after, int planned, double headroom)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(planned, 1);
        var cost = before.FreeMemoryBytes - after.FreeMemoryBytes;
        if (cost <= 0)
        {
            return new GpuReplicaCap(planned, $"{gpu}: the first replica's memory could not be measured (free memory did not drop); all {planned} planned replicas are kept");
        }

        var keep = (long)(headroom * after.TotalMemoryBytes);
        var more = Math.Max(0, (after.FreeMemoryBytes - keep) / cost);
        var replicas = (int)Math.Min(planned, 1 + more);
        var figures = string.Create(
            CultureInfo.InvariantCulture,
            $"one replica took {cost / MiB:F0} MiB; {after.FreeMemoryBytes / MiB:F0} MiB of {after.TotalMemoryBytes / MiB:F0} MiB were then free, and {headroom:P0} ({keep / MiB:F0} MiB) is kept free");
        return replicas < planned
            ? new GpuReplicaCap(replicas, $"{gpu}: capped at {replicas} of {planned} planned replicas: {figures}")
            : new GpuReplicaCap(replicas, $"{gpu}: all {planned} planned replicas fit: {figures}");
    }
}
