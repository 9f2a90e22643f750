using System.Globalization;

namespace InferPool.Devices;

/// <summary>
/// How many replicas fit on a GPU, from what the first replicas took: the memory free before each was built and
/// after its first full batch, and a share of the card to keep free. The second replica's cost is the one that
/// counts when it was measured: the first one's includes what all of a process's sessions share (the CUDA context,
/// cuDNN and cuBLAS handles), which the others do not pay again.
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
    public static GpuReplicaCap Compute(Device gpu, GpuReading before, GpuReading after, int planned, double headroom) =>
        Compute(gpu, before, after, null, null, planned, headroom);

    /// <summary>
    /// The cap when every planned replica fits even if each took what the first one did, which includes what all of a
    /// process's sessions share and so is the most any one replica costs: then the second need not be measured, and the
    /// others can start at once. Null when they might not all fit, or nothing was measured.
    /// </summary>
    /// <param name="gpu">The GPU.</param>
    /// <param name="before">Its memory before the first replica was built.</param>
    /// <param name="after">Its memory once the first replica had run a full batch.</param>
    /// <param name="planned">Replicas planned for it.</param>
    /// <param name="headroom">Share of its total memory to keep free, 0 to 1.</param>
    public static GpuReplicaCap? AllFitAtFirstCost(Device gpu, GpuReading before, GpuReading after, int planned, double headroom)
    {
        // The cap from the first replica alone: when even that keeps the whole plan, measuring the second cannot lower it.
        var cap = Compute(gpu, before, after, planned, headroom);
        return planned > 1 && before.FreeMemoryBytes > after.FreeMemoryBytes && cap.Replicas == planned
            ? cap with { Reason = $"{cap.Reason} (the first one's cost includes what the replicas share, so none costs more), so the others start at once" }
            : null;
    }

    /// <summary>Works out the cap from the first replica and, when it was measured, the second.</summary>
    /// <param name="gpu">The GPU.</param>
    /// <param name="before">Its memory before the first replica was built.</param>
    /// <param name="after">Its memory once the first replica had run a full batch.</param>
    /// <param name="beforeSecond">Its memory before the second replica was built, or null when only the first was measured.</param>
    /// <param name="afterSecond">Its memory once the second replica had run a full batch, or null.</param>
    /// <param name="planned">Replicas planned for it.</param>
    /// <param name="headroom">Share of its total memory to keep free, 0 to 1.</param>
    public static GpuReplicaCap Compute(Device gpu, GpuReading before, GpuReading after, GpuReading? beforeSecond, GpuReading? afterSecond, int planned, double headroom)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(planned, 1);
        var first = before.FreeMemoryBytes - after.FreeMemoryBytes;
        var second = beforeSecond is { } b && afterSecond is { } a ? b.FreeMemoryBytes - a.FreeMemoryBytes : (long?)null;
        var built = second is null ? 1 : 2;
        var last = second is null ? after : afterSecond!.Value;
        var cost = second > 0 ? second.Value : first;
        if (cost <= 0)
        {
            return new GpuReplicaCap(planned, $"{gpu}: the replicas' memory could not be measured (free memory did not drop); all {planned} planned replicas are kept");
        }

        var keep = (long)(headroom * last.TotalMemoryBytes);
        var room = last.FreeMemoryBytes - keep;
        // The first replica always stays; a second one already built goes when it left less than the headroom free.
        var replicas = (int)Math.Min(planned, room < 0 ? 1 : built + (room / cost));
        var took = second is null
            ? string.Create(CultureInfo.InvariantCulture, $"one replica took {first / MiB:F0} MiB")
            : string.Create(CultureInfo.InvariantCulture, $"the first replica took {first / MiB:F0} MiB (with what the replicas share) and the second {second.Value / MiB:F0} MiB")
                + (second > 0 ? ", the cost of each more" : "; the first one's figure is used");
        var figures = string.Create(
            CultureInfo.InvariantCulture,
            $"{took}; {last.FreeMemoryBytes / MiB:F0} MiB of {last.TotalMemoryBytes / MiB:F0} MiB were then free, and {headroom:P0} ({keep / MiB:F0} MiB) is kept free");
        return replicas < planned
            ? new GpuReplicaCap(replicas, $"{gpu}: capped at {replicas} of {planned} planned replicas: {figures}")
            : new GpuReplicaCap(replicas, $"{gpu}: all {planned} planned replicas fit: {figures}");
    }
}
