using System.Globalization;
using InferPool.Devices;

namespace InferPool.Onnx;

/// <summary>
/// The settings of ONNX Runtime's CUDA execution provider for one replica, instead of its defaults: exhaustive
/// cuDNN algorithm search runs again for every new batch shape (a partial batch is a new shape) with a large
/// workspace, and the arena grows by powers of two with no limit, so one session can take the whole card.
/// </summary>
internal static class CudaProviderSettings
{
    /// <summary>The provider options for a session on <paramref name="slot"/>'s device.</summary>
    public static Dictionary<string, string> For(ReplicaSlot slot, IReadOnlyList<GpuInfo> gpus, double headroom)
    {
        var settings = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["device_id"] = slot.Device.Index.ToString(CultureInfo.InvariantCulture),
            // Heuristics pick a convolution algorithm without timing each one per input shape.
            ["cudnn_conv_algo_search"] = "HEURISTIC",
            // Grow the arena by what is asked, not by the next power of two.
            ["arena_extend_strategy"] = "kSameAsRequested",
        };
        if (gpus.FirstOrDefault(g => g.Device == slot.Device) is { TotalMemoryBytes: > 0 } gpu)
        {
            var share = (long)(gpu.TotalMemoryBytes * (1 - headroom) / Math.Max(1, slot.ReplicasOnDevice));
            settings["gpu_mem_limit"] = share.ToString(CultureInfo.InvariantCulture);
        }

        return settings;
    }
}
