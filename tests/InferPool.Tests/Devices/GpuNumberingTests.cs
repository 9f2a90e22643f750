using InferPool.Devices;

namespace InferPool.Tests.Devices;

/// <summary>cuda:N as CUDA numbers it for this process, from NVML's list (fake data here) and CUDA_VISIBLE_DEVICES.</summary>
public sealed class GpuNumberingTests
{
    // NVML's list: card 1 could not be opened, so it is missing; indexes and UUIDs are NVML's.
    private static readonly GpuInfo[] Cards =
    [
        Card(0, "GPU-0a11aaaa-0000"),
        Card(2, "GPU-2c33cccc-2222"),
        Card(3, "GPU-3d44dddd-3333"),
    ];

    [Fact]
    public void Visible_NotSet_EveryCardNumberedWithoutGaps()
    {
        var gpus = GpuNumbering.Visible(Cards, null);

        Assert.Equal([Device.Cuda(0), Device.Cuda(1), Device.Cuda(2)], gpus.Select(g => g.Device));
        Assert.Equal([0u, 2u, 3u], gpus.Select(g => g.NvmlIndex));
    }

    [Fact]
    public void Visible_OneIndex_IsCuda0AndTelemetryKeepsItsNvmlIndex()
    {
        var gpu = Assert.Single(GpuNumbering.Visible(Cards, "3"));

        Assert.Equal(Device.Cuda(0), gpu.Device);
        Assert.Equal(3u, gpu.NvmlIndex);
    }

    [Fact]
    public void Visible_ListedOrder_IsCudasOrder()
    {
        var gpus = GpuNumbering.Visible(Cards, "3,0");

        Assert.Equal([3u, 0u], gpus.Select(g => g.NvmlIndex));
        Assert.Equal([Device.Cuda(0), Device.Cuda(1)], gpus.Select(g => g.Device));
    }

    [Fact]
    public void Visible_UuidsAndUniquePrefixes_NameCards()
    {
        var gpus = GpuNumbering.Visible(Cards, "GPU-2c33cccc-2222,GPU-0a");

        Assert.Equal([2u, 0u], gpus.Select(g => g.NvmlIndex));
    }

    [Theory]
    [InlineData("0,7,2", new uint[] { 0 })] // the list ends at the first entry that names no card
    [InlineData("GPU-,2", new uint[] { })] // an ambiguous prefix names no card
    [InlineData("1", new uint[] { })] // NVML could not open card 1
    [InlineData("", new uint[] { })] // set but empty: no GPU
    [InlineData("2,2", new uint[] { 2 })] // a card once
    public void Visible_AsCudaReadsIt(string setting, uint[] expected)
    {
        Assert.Equal(expected, GpuNumbering.Visible(Cards, setting).Select(g => g.NvmlIndex));
    }

    [Fact]
    public void WorkerVisibleDevices_PinsByUuidElseByTheParentsEntryElseByOrdinal()
    {
        var gpus = GpuNumbering.Visible(Cards, "3,0");

        Assert.Equal("GPU-0a11aaaa-0000", GpuNumbering.WorkerVisibleDevices(Device.Cuda(1), gpus, "3,0"));
        Assert.Equal("0", GpuNumbering.WorkerVisibleDevices(Device.Cuda(1), [], "3,0"));
        Assert.Equal("1", GpuNumbering.WorkerVisibleDevices(Device.Cuda(1), [], null));
        Assert.Equal("", GpuNumbering.WorkerVisibleDevices(Device.Cuda(5), [], "3,0"));
    }

    private static GpuInfo Card(uint index, string uuid) => new(Device.Cuda((int)index), "Fake GPU", 80L << 30, 70L << 30) { Uuid = uuid, NvmlIndex = index };
}
