using System.Runtime.InteropServices;
using System.Text;

namespace InferPool.Devices;

/// <summary>
/// Finds NVIDIA GPUs through NVML (<c>libnvidia-ml.so.1</c>, installed with the driver), numbered as CUDA numbers
/// them for this process (<see cref="GpuNumbering"/>: the process's <c>CUDA_VISIBLE_DEVICES</c> filters and orders
/// them). Without the library or a driver it reports no GPU and says why, instead of failing.
/// </summary>
public sealed class NvmlDeviceInventory : IDeviceInventory
{
    private NvmlDeviceInventory(int cpuCores, IReadOnlyList<GpuInfo> gpus, string? unavailableReason)
    {
        CpuCores = cpuCores;
        GpuDetails = gpus;
        Gpus = [.. gpus.Select(g => g.Device)];
        UnavailableReason = unavailableReason;
    }

    /// <inheritdoc />
    public int CpuCores { get; }

    /// <inheritdoc />
    public IReadOnlyList<Device> Gpus { get; }

    /// <summary>Name and memory of each GPU found.</summary>
    public IReadOnlyList<GpuInfo> GpuDetails { get; }

    /// <summary>Why no GPU could be listed (no library, no driver), or null when NVML answered.</summary>
    public string? UnavailableReason { get; }

    /// <summary>Asks NVML what GPUs this machine has.</summary>
    public static NvmlDeviceInventory Discover()
    {
        var cores = Environment.ProcessorCount;
        if (!OperatingSystem.IsLinux() || !NativeLibrary.TryLoad(Nvml.Library, out var handle))
        {
            return new NvmlDeviceInventory(cores, [], $"no NVIDIA GPU found ({Nvml.Library} is not installed)");
        }

        NativeLibrary.Free(handle);
        try
        {
            var init = Nvml.Init();
            if (init != 0)
            {
                return new NvmlDeviceInventory(cores, [], $"no NVIDIA GPU found (NVML could not start: error {init}; is the driver loaded?)");
            }

            try
            {
                if (Nvml.DeviceGetCount(out var count) != 0)
                {
                    return new NvmlDeviceInventory(cores, [], "no NVIDIA GPU found (NVML could not count devices)");
                }

                var gpus = new List<GpuInfo>();
                for (var i = 0u; i < count; i++)
                {
                    if (Nvml.DeviceGetHandleByIndex(i, out var device) != 0)
                    {
                        continue;
                    }

                    var name = new byte[96];
                    var gotName = Nvml.DeviceGetName(device, name, (uint)name.Length) == 0;
                    var gotMemory = Nvml.DeviceGetMemoryInfo(device, out var memory) == 0;
                    var uuid = new byte[96];
                    var gotUuid = Nvml.DeviceGetUuid(device, uuid, (uint)uuid.Length) == 0;
                    gpus.Add(new GpuInfo(
                        Device.Cuda((int)i),
                        gotName ? Encoding.UTF8.GetString(name).TrimEnd('\0') : "unknown",
                        gotMemory ? (long)memory.Total : 0,
                        gotMemory ? (long)memory.Free : 0)
                    {
                        Uuid = gotUuid ? Encoding.UTF8.GetString(uuid).TrimEnd('\0') : null,
                        NvmlIndex = i,
                    });
                }

                var visibleSetting = Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES");
                var visible = GpuNumbering.Visible(gpus, visibleSetting);
                var reason = gpus.Count == 0 ? "no NVIDIA GPU found (NVML lists none)"
                    : visible.Count == 0 ? $"no NVIDIA GPU visible (CUDA_VISIBLE_DEVICES='{visibleSetting}' hides all {gpus.Count})"
                    : null;
                return new NvmlDeviceInventory(cores, visible, reason);
            }
            finally
            {
                _ = Nvml.Shutdown();
            }
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return new NvmlDeviceInventory(cores, [], $"no NVIDIA GPU found ({ex.Message})");
        }
    }
}
