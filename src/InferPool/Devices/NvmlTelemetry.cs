using System.Runtime.InteropServices;

namespace InferPool.Devices;

/// <summary>
/// Live GPU memory and utilisation through NVML, for replica capping and for sampling while a job runs.
/// Holds NVML open until disposed. NVML numbers GPUs in PCI bus order; InferPool sets
/// <c>CUDA_DEVICE_ORDER=PCI_BUS_ID</c> for its workers so that <c>cuda:N</c> means the same card to both.
/// </summary>
public sealed class NvmlTelemetry : IGpuTelemetry, IDisposable
{
    private readonly Lock _lock = new();
    private bool _open = true;

    private NvmlTelemetry()
    {
    }

    /// <summary>Opens NVML, or returns null (and why) when there is no library or driver.</summary>
    public static NvmlTelemetry? TryOpen(out string? unavailableReason)
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
                return new NvmlTelemetry();
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
            if (!_open || Nvml.DeviceGetHandleByIndex((uint)gpu.Index, out var device) != 0 || Nvml.DeviceGetMemoryInfo(device, out var memory) != 0)
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
