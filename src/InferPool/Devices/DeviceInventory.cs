namespace InferPool.Devices;

/// <summary>Ready-made <see cref="IDeviceInventory"/> instances.</summary>
public static class DeviceInventory
{
    /// <summary>The host CPU and no GPU: <see cref="Environment.ProcessorCount"/> cores.</summary>
    public static IDeviceInventory HostOnly { get; } = new Fixed(Environment.ProcessorCount, []);

    /// <summary>An inventory with the given cores and GPU ordinals (tests, or a caller that knows better).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="cpuCores"/> is less than 1.</exception>
    public static IDeviceInventory Create(int cpuCores, IEnumerable<int> gpuOrdinals)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(cpuCores, 1);
        ArgumentNullException.ThrowIfNull(gpuOrdinals);
        return new Fixed(cpuCores, [.. gpuOrdinals.Distinct().Order().Select(Device.Cuda)]);
    }

    private sealed record Fixed(int CpuCores, IReadOnlyList<Device> Gpus) : IDeviceInventory;
}
