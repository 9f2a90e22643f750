using InferPool.Devices;
using InferPool.Diagnostics;
using Microsoft.Extensions.Time.Testing;

namespace InferPool.Tests.Diagnostics;

/// <summary>GPU sampling on a fake clock against a fake GPU: one reading per period, mean utilisation and peak memory.</summary>
public sealed class GpuSamplerTests
{
    private const long GiB = 1L << 30;

    [Fact]
    public async Task Sampler_ReadsOncePerPeriod_AndKeepsMeanUtilisationAndPeakMemory()
    {
        var time = new FakeTimeProvider();
        var gpu = new ScriptedGpu([(20, 1 * GiB), (60, 5 * GiB), (100, 3 * GiB)]);
        var sampler = new GpuSampler(gpu, [Device.Cuda(0), Device.Cpu], time, TimeSpan.FromSeconds(1));
        await using (sampler.ConfigureAwait(false))
        {
            sampler.Start();
            Assert.Equal(1, gpu.Reads);
            Assert.True(await gpu.ReadSignal.WaitAsync(0)); // the first reading, taken by Start itself
            for (var tick = 2; tick <= 3; tick++)
            {
                time.Advance(TimeSpan.FromSeconds(1));
                Assert.True(await gpu.ReadSignal.WaitAsync(TimeSpan.FromSeconds(30)), "the sampler did not read after the period");
            }

            var usage = Assert.Single(sampler.Usage());
            Assert.Equal(Device.Cuda(0), usage.Device);
            Assert.Equal(3, usage.Samples);
            Assert.Equal(60, usage.MeanUtilizationPercent);
            Assert.Equal(5 * GiB, usage.PeakUsedBytes);
            Assert.Equal(3 * GiB, usage.Latest!.Value.UsedMemoryBytes);
        }

        time.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(3, gpu.Reads); // stopped when disposed
    }

    [Fact]
    public void Sampler_WithoutReadings_ReportsNothingMeasured()
    {
        var sampler = new GpuSampler(new ScriptedGpu([]), [Device.Cuda(0)], new FakeTimeProvider());

        sampler.SampleOnce();

        var usage = Assert.Single(sampler.Usage());
        Assert.Equal((0, null, 0L), (usage.Samples, usage.MeanUtilizationPercent, usage.PeakUsedBytes));
        Assert.Null(usage.Latest);
    }

    /// <summary>A 16 GiB GPU that answers the scripted (utilisation, used memory) readings in turn, then none.</summary>
    private sealed class ScriptedGpu((int Utilization, long Used)[] script) : IGpuTelemetry
    {
        private int _reads;

        public int Reads => Volatile.Read(ref _reads);

        public SemaphoreSlim ReadSignal { get; } = new(0);

        public GpuReading? Read(Device gpu)
        {
            var index = Interlocked.Increment(ref _reads) - 1;
            ReadSignal.Release();
            return index < script.Length ? new GpuReading(16 * GiB, (16 * GiB) - script[index].Used, script[index].Utilization) : null;
        }
    }
}
