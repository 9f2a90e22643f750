using InferPool.Devices;

namespace InferPool.Jobs.Tests;

/// <summary>The CPU defaults README promises: replicas × threads never above the cores, and a count in the devices wins over the replicas.</summary>
public sealed class JobDefaultsTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(8)]
    [InlineData(12)]
    [InlineData(16)]
    [InlineData(64)]
    [InlineData(96)]
    public void Plan_OnTheCpu_NeverOversubscribesTheCores(int cores)
    {
        var plan = JobDefaults.Plan(new Machine(cores, []));
        var threads = JobDefaults.ThreadsPerReplica(plan, cores);

        Assert.Equal([Device.Cpu], plan.Devices.Select(d => d.Device));
        Assert.InRange(plan.TotalReplicas * threads, 1, cores);
        Assert.True(plan.TotalReplicas * threads > cores / 2, $"{plan.TotalReplicas} × {threads} leaves most of {cores} cores idle");
        Assert.Equal(cores <= 4 ? 1 : 2, Math.Min(threads, cores <= 4 ? 1 : 2));
    }

    [Fact]
    public void Plan_CountInTheDevicesWinsOverTheReplicas()
    {
        var machine = new Machine(8, [Device.Cuda(0), Device.Cuda(1)]);

        Assert.Equal(3, JobDefaults.Plan(machine, "cpu=3", replicas: 1).TotalReplicas);
        Assert.Equal(1, JobDefaults.Plan(machine, "cpu", replicas: 1).TotalReplicas);
        Assert.Equal([3, 1], JobDefaults.Plan(machine, "cuda:0=3,cuda:1", replicas: 1).Devices.Select(d => d.Replicas));
        Assert.Equal([JobDefaults.GpuReplicas, JobDefaults.GpuReplicas], JobDefaults.Plan(machine).Devices.Select(d => d.Replicas));
    }

    private sealed record Machine(int CpuCores, IReadOnlyList<Device> Gpus) : IDeviceInventory;
}
