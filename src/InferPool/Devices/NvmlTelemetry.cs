using System.Runtime.InteropServices;

namespace InferPool.Devices;

/// <summary>
/// Live GPU memory and utilisation through NVML, for replica capping and for sampling while a job runs.
/// Holds NVML open until disposed. A device is read through the NVML index (or UUID) its inventory entry
/// gives, not through its CUDA ordinal, which <c>CUDA_VISIBLE_DEVICES</c> may have renumbered.
/// </summary>
public sealed class NvmlTelemetry : IGpuTelemetry, IDisposable
{
    private readonly Lock _lock = new();
    private readonly IReadOnlyList<GpuInfo> _gpus;
    private bool _open = true;

    private NvmlTelemetry(IReadOnlyList<GpuInfo> gpus)
    {
        _gpus = gpus;
    }

    /// <summary>Opens NVML for the GPUs of <paramref name="gpus"/> (an inventory's <see cref="NvmlDeviceInventory.GpuDetails"/>), or returns null (and why) when there is no library or driver.</summary>
    /// <param name="gpus">The GPUs, each with its NVML index and UUID.</param>
    /// <param name="unavailableReason">Why NVML could not be opened.</param>
    public static NvmlTelemetry? TryOpen(IReadOnlyList<GpuInfo> gpus, out string? unavailableReason)
    {
        unavailableReason = null;
        if (!OperatingSystem.IsLinux() || !NativeLibrary.TryLoad(Nvml.Library, out var handle))
        {
            unavailableReason = $"{Nvml.Library} is not installed";
            return null;
        }

        NativeLibrary.Free(handle);
        try
        {
            var init = Nvml.Init();
            if (init == 0)
            {
                return new NvmlTelemetry(gpus);
            }

            unavailableReason = $"NVML could not start (error {init})";
            return null;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            unavailableReason = ex.Message;
            return null;
        }
    }

    /// <inheritdoc />
    public GpuReading? Read(Device gpu)
    {
        if (!gpu.IsGpu)
        {
            return null;
        }

        lock (_lock)
        {
            var card = _gpus.FirstOrDefault(g => g.Device == gpu);
            if (!_open || card is null || Nvml.DeviceGetHandleByIndex(card.NvmlIndex, out var device) != 0 || Nvml.DeviceGetMemoryInfo(device, out var memory) != 0)
            {
                return null;
            }

            int? utilization = Nvml.DeviceGetUtilizationRates(device, out var rates) == 0 ? (int)rates.Gpu : null;
            return new GpuReading((long)memory.Total, (long)memory.Free, utilization);
        }
    }

    /// <summary>Closes NVML.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_open)
            {
                _open = false;
                _ = Nvml.Shutdown();
            }
        }
    }
}
