namespace InferPool.Devices;

/// <summary>Reads a GPU's memory and utilisation now (NVML on a real machine; a fake in tests).</summary>
public interface IGpuTelemetry
{
    /// <summary>The GPU's state now, or null when it cannot be read.</summary>
    GpuReading? Read(Device gpu);
}

/// <summary>One reading of a GPU.</summary>
/// <param name="TotalMemoryBytes">Its memory.</param>
/// <param name="FreeMemoryBytes">Memory not in use by any process.</param>
/// <param name="UtilizationPercent">Percent of the last sample period in which a kernel ran, or null if unknown.</param>
public readonly record struct GpuReading(long TotalMemoryBytes, long FreeMemoryBytes, int? UtilizationPercent)
{
    /// <summary>Memory in use.</summary>
    public long UsedMemoryBytes => TotalMemoryBytes - FreeMemoryBytes;
}
