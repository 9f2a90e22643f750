using InferPool.Devices;

namespace InferPool.Tests.Devices;

public class DeviceSpecTests
{
    private static readonly IDeviceInventory TwoGpus = DeviceInventory.Create(8, [0, 1]);
    private static readonly IDeviceInventory NoGpu = DeviceInventory.Create(2, []);

    [Theory]
    [InlineData("cpu", NoGpuName, "cpu=2")]
    [InlineData("auto", NoGpuName, "cpu=2")]
    [InlineData("auto", TwoGpuName, "cuda:0=2,cuda:1=2")]
    [InlineData("cuda", TwoGpuName, "cuda:0=2,cuda:1=2")]
    [InlineData("cuda:0,1", TwoGpuName, "cuda:0=2,cuda:1=2")]
    [InlineData("cuda:1", TwoGpuName, "cuda:1=2")]
    [InlineData("cuda:0=4,cuda:1=1,cpu", TwoGpuName, "cuda:0=4,cuda:1,cpu=2")]
    [InlineData(" GPU:1 , Cpu=3 ", TwoGpuName, "cuda:1=2,cpu=3")]
    public void Resolve_ValidSelection_GivesPlan(string text, string inventory, string expected)
    {
        var plan = DeviceSpec.Parse(text).Resolve(inventory == TwoGpuName ? TwoGpus : NoGpu, defaultReplicas: 2);

        Assert.Equal(expected, plan.ToString());
        Assert.Equal(plan.Devices.Sum(d => d.Replicas), plan.Slots.Count);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("tpu:0", "'tpu:0'")]
    [InlineData("cuda:x", "'cuda:x'")]
    [InlineData("cpu=0", "replica count")]
    [InlineData("cuda:0=two", "replica count")]
    [InlineData("auto,cpu", "stands alone")]
    public void Parse_BadText_NamesThePart(string text, string expectedFragment)
    {
        var ex = Assert.Throws<FormatException>(() => DeviceSpec.Parse(text));
        Assert.Contains(expectedFragment, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Resolve_MissingGpu_SaysWhatTheMachineHas()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => DeviceSpec.Parse("cuda:3").Resolve(TwoGpus));
        Assert.Contains("cuda:3", ex.Message, StringComparison.Ordinal);
        Assert.Contains("cuda:0, cuda:1", ex.Message, StringComparison.Ordinal);

        var none = Assert.Throws<InvalidOperationException>(() => DeviceSpec.Parse("cuda").Resolve(NoGpu));
        Assert.Contains("no GPU", none.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Resolve_PerDeviceDefault_AppliesOnlyWhereNoCountIsGiven()
    {
        var plan = DeviceSpec.Parse("cuda:0=3,cuda:1,cpu=1").Resolve(TwoGpus, d => d.IsGpu ? 2 : 8);

        Assert.Equal([3, 2, 1], plan.Devices.Select(d => d.Replicas));
        Assert.Equal(8, DeviceSpec.Parse("cpu").Resolve(NoGpu, d => d.IsGpu ? 2 : 8).TotalReplicas);
    }

    [Fact]
    public void Resolve_SameDeviceTwice_Throws()
    {
        Assert.Throws<InvalidOperationException>(() => DeviceSpec.Parse("cuda:0,cuda:0").Resolve(TwoGpus));
    }

    [Fact]
    public void Slots_AreNumberedPerDeviceAndGlobally()
    {
        var plan = ReplicaPlan.Create(new DeviceAllocation(Device.Cuda(0), 2), new DeviceAllocation(Device.Cpu, 1));

        Assert.Equal(["cuda:0#0", "cuda:0#1", "cpu#0"], plan.Slots.Select(s => s.Name));
        Assert.Equal([0, 1, 2], plan.Slots.Select(s => s.Id));
        Assert.All(plan.Slots, s => Assert.Equal(3, s.TotalReplicas));
        Assert.Equal(2, plan.Slots[1].ReplicasOnDevice);
    }

    [Theory]
    [InlineData("cpu")]
    [InlineData("cuda:0")]
    [InlineData("cuda:12")]
    public void Device_TextRoundTrips(string text)
    {
        Assert.Equal(text, Device.Parse(text).ToString());
    }

    private const string TwoGpuName = "two-gpus";
    private const string NoGpuName = "no-gpu";
}
