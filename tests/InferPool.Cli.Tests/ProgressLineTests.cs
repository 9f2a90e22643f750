using InferPool.Cli.Progress;
using InferPool.Devices;
using InferPool.Diagnostics;

namespace InferPool.Cli.Tests;

/// <summary>The one-line progress: counts, rate, ETA, and per device its replicas and busy share, plus GPU utilisation and memory where sampled.</summary>
public sealed class ProgressLineTests
{
    [Fact]
    public void Line_ShowsSampledGpuUtilisationAndMemoryBesideItsDevice()
    {
        var snapshot = new PoolSnapshot(TimeSpan.FromSeconds(10), 120, 100, 2, 18, 20, 10.2, [
            new DeviceSnapshot(Device.Cuda(0), 2, 2, 90, 3, 9, 0.95, 0, false),
            new DeviceSnapshot(Device.Cpu, 1, 1, 12, 12, 1.2, 0.5, 0, false),
        ]);
        GpuUsage[] gpus = [new(Device.Cuda(0), new GpuReading(80L << 30, 68L << 30, 87), 85, 12L << 30, 10)];

        var line = ProgressDisplay.Line(snapshot, 200, gpus);

        Assert.Equal("102/200 (51%) · 10.2 items/s · 2 failed · ETA 9.6s · cuda:0 2/2 busy 95 % · GPU 87% 12.0/80.0 GiB · cpu 1/1 busy 50 %", line.Replace('\u00a0', ' '));
    }
}
