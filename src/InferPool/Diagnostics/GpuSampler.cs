using InferPool.Devices;

namespace InferPool.Diagnostics;

/// <summary>
/// Samples each GPU's utilisation and memory about once a second while a job runs, so a progress display can
/// show whether the cards are busy and a summary can give the mean utilisation and peak memory per GPU.
/// </summary>
public sealed class GpuSampler : IAsyncDisposable
{
    private readonly IGpuTelemetry _telemetry;
    private readonly IReadOnlyList<Device> _gpus;
    private readonly TimeProvider _time;
    private readonly TimeSpan _period;
    private readonly Lock _lock = new();
    private readonly Dictionary<Device, Totals> _totals = [];
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    /// <summary>Creates a sampler; call <see cref="Start"/> to begin.</summary>
    /// <param name="telemetry">Where readings come from.</param>
    /// <param name="gpus">The GPUs to sample (devices that are not GPUs are ignored).</param>
    /// <param name="timeProvider">The clock; tests pass a fake one.</param>
    /// <param name="period">Time between samples; one second when null.</param>
    public GpuSampler(IGpuTelemetry telemetry, IEnumerable<Device> gpus, TimeProvider? timeProvider = null, TimeSpan? period = null)
    {
        ArgumentNullException.ThrowIfNull(telemetry);
        ArgumentNullException.ThrowIfNull(gpus);
        _telemetry = telemetry;
        _gpus = [.. gpus.Where(g => g.IsGpu).Distinct()];
        _time = timeProvider ?? TimeProvider.System;
        _period = period ?? TimeSpan.FromSeconds(1);
        foreach (var gpu in _gpus)
        {
            _totals[gpu] = new Totals();
        }
    }

    /// <summary>Takes a first sample now and then one per period until disposed.</summary>
    public void Start()
    {
        if (_gpus.Count == 0 || _loop is not null)
        {
            return;
        }

        SampleOnce();
        _loop = LoopAsync(_stop.Token);
    }

    /// <summary>Reads every GPU once and adds the readings to the totals (also called by the timer).</summary>
    public void SampleOnce()
    {
        foreach (var gpu in _gpus)
        {
            var reading = _telemetry.Read(gpu);
            if (reading is not { } r)
            {
                continue;
            }

            lock (_lock)
            {
                var t = _totals[gpu];
                t.Latest = r;
                t.Samples++;
                t.PeakUsedBytes = Math.Max(t.PeakUsedBytes, r.UsedMemoryBytes);
                if (r.UtilizationPercent is { } u)
                {
                    t.UtilizationSamples++;
                    t.UtilizationSum += u;
                }
            }
        }
    }

    /// <summary>Per GPU: the latest reading, mean utilisation and peak memory in use so far.</summary>
    public IReadOnlyList<GpuUsage> Usage()
    {
        lock (_lock)
        {
            return [.. _gpus.Select(g => _totals[g]).Zip(_gpus, (t, g) => new GpuUsage(
                g,
                t.Latest,
                t.UtilizationSamples == 0 ? null : t.UtilizationSum / t.UtilizationSamples,
                t.PeakUsedBytes,
                t.Samples))];
        }
    }

    /// <summary>Stops sampling.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop is not null)
        {
            try
            {
                await _loop.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Stopped.
            }
        }

        _stop.Dispose();
    }

    private async Task LoopAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(_period, _time);
        while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
        {
            SampleOnce();
        }
    }

    private sealed class Totals
    {
        public GpuReading? Latest { get; set; }

        public int Samples { get; set; }

        public int UtilizationSamples { get; set; }

        public double UtilizationSum { get; set; }

        public long PeakUsedBytes { get; set; }
    }
}

/// <summary>One GPU over a job so far.</summary>
/// <param name="Device">The GPU.</param>
/// <param name="Latest">Its latest reading, or null before the first.</param>
/// <param name="MeanUtilizationPercent">Mean of the utilisation samples, or null when NVML gave none.</param>
/// <param name="PeakUsedBytes">The most memory in use (by any process) in any sample.</param>
/// <param name="Samples">Readings taken.</param>
public sealed record GpuUsage(Device Device, GpuReading? Latest, double? MeanUtilizationPercent, long PeakUsedBytes, int Samples);
