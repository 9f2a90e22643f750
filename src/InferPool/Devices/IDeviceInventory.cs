namespace InferPool.Devices;

/// <summary>
/// What hardware this machine has, as far as a job's device selection needs to know.
/// </summary>
/// <remarks>
/// The core ships <see cref="DeviceInventory.HostOnly"/>; GPU discovery (NVML) lives outside the core and
/// implements this interface, so <c>auto</c> can choose every GPU when there are any.
/// </remarks>
public interface IDeviceInventory
{
    /// <summary>Logical CPU cores available to this process.</summary>
    int CpuCores { get; }

    /// <summary>The GPUs found, in ordinal order; empty when there are none.</summary>
    IReadOnlyList<Device> Gpus { get; }
}
