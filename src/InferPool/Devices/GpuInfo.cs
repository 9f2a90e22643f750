namespace InferPool.Devices;

/// <summary>One GPU as NVML describes it, addressed as CUDA will address it in this process.</summary>
/// <param name="Device">Its address, <c>cuda:N</c>: N is the CUDA ordinal this process sees (after <c>CUDA_VISIBLE_DEVICES</c>).</param>
/// <param name="Name">The product name.</param>
/// <param name="TotalMemoryBytes">Total memory.</param>
/// <param name="FreeMemoryBytes">Free memory when it was asked.</param>
public sealed record GpuInfo(Device Device, string Name, long TotalMemoryBytes, long FreeMemoryBytes)
{
    /// <summary>The card's UUID (<c>GPU-…</c>), which pins a worker process to this very card; null where NVML did not give it.</summary>
    public string? Uuid { get; init; }

    /// <summary>NVML's index of the card (PCI bus order over every card of the machine), for telemetry.</summary>
    public uint NvmlIndex { get; init; }
}
