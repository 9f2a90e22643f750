using InferPool.Onnx;
using InferPool.Replicas;
using InferPool.Results;

namespace InferPool.Jobs.Tuning;

/// <summary>What one configuration measured: items per second (mean of its measurements).</summary>
/// <param name="Candidate">The configuration.</param>
/// <param name="ItemsPerSecond">Its rate.</param>
/// <param name="Measurements">How many measurements the rate is the mean of.</param>
/// <param name="StoppedEarly">It was stopped at half its slice for being clearly slower.</param>
public sealed record TrialResult(Candidate Candidate, double ItemsPerSecond, int Measurements, bool StoppedEarly);

/// <summary>
/// Measures configurations on prepared items of the user's input within a time budget and picks the fastest.
/// Each configuration's replicas are built before it is timed (building is not what a long job waits on) and
/// warmed up with two batches per replica. A first pass gives each configuration an equal slice of 60% of the
/// budget and stops a configuration at half its slice when it is clearly slower (under 60% of the best so far);
/// the rest of the budget measures the three best again, in the opposite order, and their two figures are averaged.
/// </summary>
public sealed class Tuner
{
    private static readonly TimeSpan MinimumSlice = TimeSpan.FromSeconds(0.5);
    private readonly OnnxModel _model;
    private readonly TimeProvider _time;

    /// <summary>Creates a tuner for <paramref name="model"/>.</summary>
    /// <param name="model">The model to measure.</param>
    /// <param name="time">The clock for slices and rates.</param>
    public Tuner(OnnxModel model, TimeProvider time)
    {
        _model = model;
        _time = time;
    }

    /// <summary>Measures every candidate and returns them fastest first.</summary>
    /// <param name="candidates">What to try.</param>
    /// <param name="sample">Prepared model inputs, cycled through during each measurement.</param>
    /// <param name="budget">Wall time for the whole search, replica builds included.</param>
    /// <param name="measured">Called after each measurement (for progress).</param>
    /// <param name="cancellationToken">Stops the search.</param>
    public async Task<IReadOnlyList<TrialResult>> TuneAsync(
        IReadOnlyList<Candidate> candidates,
        IReadOnlyList<float[]> sample,
        TimeSpan budget,
        Action<TrialResult>? measured,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        ArgumentNullException.ThrowIfNull(sample);
        ArgumentOutOfRangeException.ThrowIfZero(candidates.Count);
        ArgumentOutOfRangeException.ThrowIfZero(sample.Count);
        var started = _time.GetTimestamp();
        var firstPass = budget * 0.6;
        var rates = new Dictionary<Candidate, List<double>>();
        var stoppedEarly = new HashSet<Candidate>();
        var lastBuild = TimeSpan.Zero;
        var best = 0.0;
        for (var i = 0; i < candidates.Count; i++)
        {
            var candidate = candidates[i];
            var left = firstPass - _time.GetElapsedTime(started);
            var slice = Max(MinimumSlice, (left / (candidates.Count - i)) - lastBuild);
            var (rate, built, early) = await MeasureAsync(candidate, sample, slice, best * 0.6, cancellationToken).ConfigureAwait(false);
            lastBuild = built;
            rates[candidate] = [rate];
            best = Math.Max(best, rate);
            if (early)
            {
                stoppedEarly.Add(candidate);
            }

            measured?.Invoke(new TrialResult(candidate, rate, 1, early));
        }

        // Second pass: the three best again, in the opposite order, while the budget lasts.
        var finalists = rates.Where(kv => !stoppedEarly.Contains(kv.Key)).OrderByDescending(kv => kv.Value[0]).Take(3).Select(kv => kv.Key).Reverse().ToList();
        for (var i = 0; i < finalists.Count; i++)
        {
            var left = budget - _time.GetElapsedTime(started);
            var slice = (left / (finalists.Count - i)) - lastBuild;
            if (slice < MinimumSlice)
            {
                break;
            }

            var (rate, built, _) = await MeasureAsync(finalists[i], sample, slice, 0, cancellationToken).ConfigureAwait(false);
            lastBuild = built;
            rates[finalists[i]].Add(rate);
            measured?.Invoke(new TrialResult(finalists[i], rates[finalists[i]].Average(), rates[finalists[i]].Count, false));
        }

        return [.. rates
            .Select(kv => new TrialResult(kv.Key, kv.Value.Average(), kv.Value.Count, stoppedEarly.Contains(kv.Key)))
            .OrderByDescending(r => r.ItemsPerSecond)];
    }

    /// <summary>Builds the candidate's replicas, then measures items per second for <paramref name="slice"/>;
    /// at half the slice it stops if the rate so far is under <paramref name="giveUpBelow"/>.</summary>
    private async Task<(double Rate, TimeSpan Build, bool StoppedEarly)> MeasureAsync(
        Candidate candidate,
        IReadOnlyList<float[]> sample,
        TimeSpan slice,
        double giveUpBelow,
        CancellationToken cancellationToken)
    {
        var buildStarted = _time.GetTimestamp();
        using var factory = new OnnxReplicaFactory(_model, new OnnxReplicaOptions { IntraOpThreads = candidate.Threads });
        var replicas = await ReplicaFactory.PrebuildAsync(factory, candidate.Plan, cancellationToken).ConfigureAwait(false);
        await using (replicas.ConfigureAwait(false))
        {
            var build = _time.GetElapsedTime(buildStarted);
            var (rate, early) = await MeasureWarmAsync(replicas, candidate, sample, slice, giveUpBelow, _time, cancellationToken).ConfigureAwait(false);
            return (rate, build, early);
        }
    }

    /// <summary>
    /// Items per second through already built replicas: <paramref name="sample"/> cycled for <paramref name="slice"/>
    /// after two batches per replica of warm-up.
    /// </summary>
    private static async Task<(double Rate, bool StoppedEarly)> MeasureWarmAsync(
        PrebuiltReplicas<float[], float[][]> replicas,
        Candidate candidate,
        IReadOnlyList<float[]> sample,
        TimeSpan slice,
        double giveUpBelow,
        TimeProvider time,
        CancellationToken cancellationToken)
    {
        replicas.Reset();
        var options = candidate.PoolOptions(ResultOrder.Completion, time);
        using var stop = new CancellationTokenSource();
        var warmUp = 2L * candidate.Plan.TotalReplicas * candidate.Batch;
        long done = 0;
        long counted = 0;
        long windowStart = 0;
        var rate = 0.0;
        var early = false;
        await foreach (var result in InferencePool.RunAsync(Cycle(sample, stop.Token), replicas, options, cancellationToken).ConfigureAwait(false))
        {
            if (!result.IsSuccess)
            {
                throw new InvalidOperationException($"Measuring {candidate} failed: {result.Error}");
            }

            done++;
            if (done == warmUp)
            {
                windowStart = time.GetTimestamp();
                continue;
            }

            if (done < warmUp || stop.IsCancellationRequested)
            {
                continue;
            }

            counted++;
            var elapsed = time.GetElapsedTime(windowStart);
            var clearlySlower = giveUpBelow > 0 && elapsed >= slice / 2 && counted / elapsed.TotalSeconds < giveUpBelow;
            if (elapsed >= slice || clearlySlower)
            {
                rate = counted / elapsed.TotalSeconds;
                early = clearlySlower;
                await stop.CancelAsync().ConfigureAwait(false);
            }
        }

        return (rate, early);
    }

    private static async IAsyncEnumerable<float[]> Cycle(
        IReadOnlyList<float[]> sample,
        CancellationToken stop,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        for (var i = 0; !stop.IsCancellationRequested; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return sample[i % sample.Count];
        }

        await Task.CompletedTask.ConfigureAwait(false);
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}
