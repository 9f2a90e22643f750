using InferPool.Devices;

namespace InferPool.Onnx.Tests;

/// <summary>What a CUDA session is built with, instead of ONNX Runtime's defaults (checked without a GPU).</summary>
public sealed class CudaProviderSettingsTests
{
    [Fact]
    public void For_AGpuSlot_HeuristicSearchGrowthAsRequestedAndItsShareOfTheCard()
    {
        var plan = ReplicaPlan.Create(new DeviceAllocation(Device.Cuda(1), 2));
        GpuInfo[] gpus = [new(Device.Cuda(0), "A", 40L << 30, 0), new(Device.Cuda(1), "B", 80L << 30, 0)];

        var settings = CudaProviderSettings.For(plan.Slots[1], gpus, headroom: 0.10);

        Assert.Equal("1", settings["device_id"]);
        Assert.Equal("HEURISTIC", settings["cudnn_conv_algo_search"]);
        Assert.Equal("kSameAsRequested", settings["arena_extend_strategy"]);
        Assert.Equal(((long)((80L << 30) * 0.9 / 2)).ToString(System.Globalization.CultureInfo.InvariantCulture), settings["gpu_mem_limit"]);
    }

    [Fact]
    public void For_AnUnknownCard_SetsNoMemoryLimit()
    {
        var slot = ReplicaPlan.Create(new DeviceAllocation(Device.Cuda(3), 1)).Slots[0];

        Assert.DoesNotContain("gpu_mem_limit", CudaProviderSettings.For(slot, [], 0.10).Keys);
    }
}
