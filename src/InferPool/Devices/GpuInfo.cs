namespace InferPool.Devices;

/// <summary>One GPU as NVML describes it.</summary>
/// <param name="Device">Its address, <c>cuda:N</c>.</param>
/// <param name="Name">The product name.</param>
/// <param name="TotalMemoryBytes">Total memory.</param>
/// <param name="FreeMemoryBytes">Free memory when it was asked.</param>
public sealed record GpuInfo(Device Device, string Name, long TotalMemoryBytes, long FreeMemoryBytes);
