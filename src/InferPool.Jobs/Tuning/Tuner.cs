using InferPool.Jobs.Inputs;
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
/// the rest of the budget measures the three best again (and the <see cref="Baseline"/> when it came close), in the
/// opposite order, and their two figures are averaged.
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

    /// <summary>
    /// The configuration a job uses when nothing is tuned (<see cref="Candidate.Defaults(InferPool.Devices.IDeviceInventory, Engines.JobEngine, string)"/>), if it is among the candidates.
    /// When it measures within <see cref="Margin"/> of the fastest in the first pass, the second pass measures it again
    /// beside the finalists, and <see cref="Choose"/> keeps it unless another is faster by more than the margin.
    /// </summary>
    public Candidate? Baseline { get; init; }

    /// <summary>
    /// How much faster than <see cref="Baseline"/> another configuration must measure to be chosen over it: 0.05 (5%) by
    /// default. Short trials on a shared machine differ by a few percent from run to run; a configuration that wins by
    /// less than that may well be slower over a whole job, and saving it would change what every later run uses.
    /// </summary>
    public double Margin { get; init; } = 0.05;

    /// <summary>
    /// The configuration to use from a search's results (fastest first): the fastest, unless <see cref="Baseline"/> was
    /// measured and the fastest beats it by no more than <see cref="Margin"/>; then the baseline.
    /// </summary>
    /// <param name="results">What <c>TuneAsync</c> returned.</param>
    /// <exception cref="ArgumentException">There are no results.</exception>
    public TrialResult Choose(IReadOnlyList<TrialResult> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        if (results.Count == 0)
        {
            throw new ArgumentException("There are no results to choose from.", nameof(results));
        }

        var fastest = results[0];
        var baseline = results.FirstOrDefault(r => IsBaseline(r.Candidate));
        return baseline is not null && !baseline.StoppedEarly && fastest.ItemsPerSecond <= baseline.ItemsPerSecond * (1 + Margin) ? baseline : fastest;
    }

    /// <summary>Measures every candidate on an image model (flat float inputs) and returns them fastest first.</summary>
    /// <param name="candidates">What to try.</param>
    /// <param name="sample">Prepared model inputs, cycled through during each measurement.</param>
    /// <param name="budget">Wall time for the whole search, replica builds included.</param>
    /// <param name="measured">Called after each measurement (for progress).</param>
    /// <param name="cancellationToken">Stops the search.</param>
    public Task<IReadOnlyList<TrialResult>> TuneAsync(
        IReadOnlyList<Candidate> candidates,
        IReadOnlyList<float[]> sample,
        TimeSpan budget,
        Action<TrialResult>? measured,
        CancellationToken cancellationToken = default) =>
        TuneAsync<float[], float[], float[][]>(
            candidates,
            sample,
            null,
            candidate => new OnnxReplicaFactory(_model, new OnnxReplicaOptions { IntraOpThreads = candidate.Threads }),
            budget,
            measured,
            cancellationToken);

    /// <summary>
    /// Measures every candidate on an image model with preparation running, as a job runs it: each item is decoded
    /// and resized from its file on the prepare workers while the replicas infer, so replicas × threads is chosen
    /// with the cores that decoding takes. The best configuration is also measured with half the prepare workers
    /// (on a machine of more than one core), and wins with them only if it is faster. Returns them fastest first.
    /// </summary>
    /// <param name="candidates">What to try.</param>
    /// <param name="items">Input items (image files), cycled through during each measurement.</param>
    /// <param name="prepare">Decodes and prepares one item, as the job does.</param>
    /// <param name="budget">Wall time for the whole search, replica builds included.</param>
    /// <param name="measured">Called after each measurement (for progress).</param>
    /// <param name="cancellationToken">Stops the search.</param>
    public Task<IReadOnlyList<TrialResult>> TuneAsync(
        IReadOnlyList<Candidate> candidates,
        IReadOnlyList<InputItem> items,
        Func<InputItem, float[]> prepare,
        TimeSpan budget,
        Action<TrialResult>? measured,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prepare);
        return TuneAsync<InputItem, float[], float[][]>(
            candidates,
            items,
            new PrepareStage<InputItem, float[]>((item, _) => ValueTask.FromResult(prepare(item))),
            candidate => new OnnxReplicaFactory(_model, new OnnxReplicaOptions { IntraOpThreads = candidate.Threads }),
            budget,
            measured,
            cancellationToken);
    }

    /// <summary>Measures every candidate on a model of any inputs (a text model's tokenized texts, say) and returns them fastest first.</summary>
    /// <param name="candidates">What to try.</param>
    /// <param name="sample">Prepared items, cycled through during each measurement.</param>
    /// <param name="batching">How items of different shapes share calls (a text model's padding and token budget).</param>
    /// <param name="budget">Wall time for the whole search, replica builds included.</param>
    /// <param name="measured">Called after each measurement (for progress).</param>
    /// <param name="cancellationToken">Stops the search.</param>
    public Task<IReadOnlyList<TrialResult>> TuneAsync(
        IReadOnlyList<Candidate> candidates,
        IReadOnlyList<Onnx.Tensors.TensorItem> sample,
        Onnx.Tensors.TensorBatching batching,
        TimeSpan budget,
        Action<TrialResult>? measured,
        CancellationToken cancellationToken = default) =>
        TuneAsync<Onnx.Tensors.TensorItem, Onnx.Tensors.TensorItem, Onnx.Tensors.TensorOutputs>(
            candidates,
            sample,
            null,
            candidate => new OnnxTensorReplicaFactory(_model, new OnnxReplicaOptions { IntraOpThreads = candidate.Threads }, batching),
            budget,
            measured,
            cancellationToken);

    private async Task<IReadOnlyList<TrialResult>> TuneAsync<TIn, TPrepared, TOutput>(
        IReadOnlyList<Candidate> candidates,
        IReadOnlyList<TIn> sample,
        PrepareStage<TIn, TPrepared>? prepare,
        Func<Candidate, IReplicaFactory<TPrepared, TOutput>> factories,
        TimeSpan budget,
        Action<TrialResult>? measured,
        CancellationToken cancellationToken)
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
        Candidate? fastest = null;
        var trials = candidates.ToList();
        var cores = Environment.ProcessorCount;
        for (var i = 0; i < trials.Count; i++)
        {
            var candidate = trials[i];
            var left = firstPass - _time.GetElapsedTime(started);
            var slice = Max(MinimumSlice, (left / (trials.Count - i)) - lastBuild);
            var (rate, built, early) = await MeasureAsync(candidate, sample, prepare, factories, slice, best * 0.6, cancellationToken).ConfigureAwait(false);
            lastBuild = built;
            rates[candidate] = [rate];
            if (rate > best)
            {
                (best, fastest) = (rate, candidate);
            }

            if (early)
            {
                stoppedEarly.Add(candidate);
            }

            measured?.Invoke(new TrialResult(candidate, rate, 1, early));
            if (i == candidates.Count - 1 && prepare is not null && cores > 1 && fastest is not null)
            {
                // With preparation running, fewer prepare workers leave more of the cores to inference: the fastest
                // of the first pass is tried with half of them too, as one more trial of the first pass.
                trials.Add(fastest with { PrepareWorkers = Math.Max(1, cores / 2) });
            }
        }

        // Second pass: the three best again, in the opposite order, while the budget lasts; and the baseline too when it
        // came within the margin, so that the choice between it and the fastest rests on two measurements each.
        var finalists = rates.Where(kv => !stoppedEarly.Contains(kv.Key)).OrderByDescending(kv => kv.Value[0]).Take(3).Select(kv => kv.Key).Reverse().ToList();
        if (rates.Keys.FirstOrDefault(IsBaseline) is { } baseline && !finalists.Contains(baseline) && !stoppedEarly.Contains(baseline) && rates[baseline][0] * (1 + Margin) >= best)
        {
            finalists.Insert(0, baseline);
        }

        for (var i = 0; i < finalists.Count; i++)
        {
            var left = budget - _time.GetElapsedTime(started);
            var slice = (left / (finalists.Count - i)) - lastBuild;
            if (slice < MinimumSlice)
            {
                break;
            }

            var (rate, built, _) = await MeasureAsync(finalists[i], sample, prepare, factories, slice, 0, cancellationToken).ConfigureAwait(false);
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
    private async Task<(double Rate, TimeSpan Build, bool StoppedEarly)> MeasureAsync<TIn, TPrepared, TOutput>(
        Candidate candidate,
        IReadOnlyList<TIn> sample,
        PrepareStage<TIn, TPrepared>? prepare,
        Func<Candidate, IReplicaFactory<TPrepared, TOutput>> factories,
        TimeSpan slice,
        double giveUpBelow,
        CancellationToken cancellationToken)
    {
        var buildStarted = _time.GetTimestamp();
        var factory = factories(candidate);
        try
        {
            var replicas = await ReplicaFactory.PrebuildAsync(factory, candidate.Plan, cancellationToken).ConfigureAwait(false);
            await using (replicas.ConfigureAwait(false))
            {
                var build = _time.GetElapsedTime(buildStarted);
                var (rate, early) = await MeasureWarmAsync(replicas, candidate, sample, prepare, slice, giveUpBelow, _time, cancellationToken).ConfigureAwait(false);
                return (rate, build, early);
            }
        }
        finally
        {
            (factory as IDisposable)?.Dispose();
        }
    }

    /// <summary>
    /// Items per second through already built replicas: a warm-up of two batches per replica (at most 256 items), then
    /// a run of whole rounds (replicas × batch) sized from the warm-up's rate to last about <paramref name="slice"/>, timed
    /// from its first item to its last result. Timing a whole run, not a window of results, keeps large batches honest:
    /// their results arrive in bursts, long after their work began. A run clearly slower than
    /// <paramref name="giveUpBelow"/> at half the slice is stopped and rated by what it finished.
    /// </summary>
    private static async Task<(double Rate, bool StoppedEarly)> MeasureWarmAsync<TIn, TPrepared, TOutput>(
        PrebuiltReplicas<TPrepared, TOutput> replicas,
        Candidate candidate,
        IReadOnlyList<TIn> sample,
        PrepareStage<TIn, TPrepared>? prepare,
        TimeSpan slice,
        double giveUpBelow,
        TimeProvider time,
        CancellationToken cancellationToken)
    {
        replicas.Reset();
        var options = candidate.PoolOptions(ResultOrder.Completion, time);
        var round = (long)candidate.Plan.TotalReplicas * candidate.Batch;
        var warmUp = Math.Min(2 * round, Math.Max(2L * candidate.Plan.TotalReplicas, 256));
        var warmStarted = time.GetTimestamp();
        var (warmDone, _) = await RunAsync(replicas, candidate, sample, prepare, warmUp, options, _ => false, cancellationToken).ConfigureAwait(false);
        var warmRate = warmDone / Math.Max(time.GetElapsedTime(warmStarted).TotalSeconds, 1e-3);

        var items = Math.Max(round, (long)Math.Ceiling(warmRate * slice.TotalSeconds / round) * round);
        var started = time.GetTimestamp();
        var (done, stopped) = await RunAsync(
            replicas,
            candidate,
            sample,
            prepare,
            items,
            options,
            finished =>
            {
                // Generous by a whole round in flight, whose results may all be about to arrive at once.
                var elapsed = time.GetElapsedTime(started);
                return giveUpBelow > 0 && elapsed >= slice / 2 && (finished + round) / elapsed.TotalSeconds < giveUpBelow;
            },
            cancellationToken).ConfigureAwait(false);
        return (done / Math.Max(time.GetElapsedTime(started).TotalSeconds, 1e-9), stopped);
    }

    /// <summary>Runs <paramref name="count"/> items of the sample (cycled); stops taking more when <paramref name="giveUp"/> says so.</summary>
    private static async Task<(long Done, bool GaveUp)> RunAsync<TIn, TPrepared, TOutput>(
        PrebuiltReplicas<TPrepared, TOutput> replicas,
        Candidate candidate,
        IReadOnlyList<TIn> sample,
        PrepareStage<TIn, TPrepared>? prepare,
        long count,
        InferencePoolOptions options,
        Func<long, bool> giveUp,
        CancellationToken cancellationToken)
    {
        using var stop = new CancellationTokenSource();
        long done = 0;
        var gaveUp = false;
        // Without a prepare stage the sample is already what the replicas take (TIn is TPrepared).
        var results = prepare is null
            ? InferencePool.RunAsync(Cycle(sample, count, stop.Token), (IReplicaFactory<TIn, TOutput>)(object)replicas, options, cancellationToken).Select(r => (r.IsSuccess, r.Error))
            : InferencePool.RunAsync(Cycle(sample, count, stop.Token), prepare, replicas, options, cancellationToken).Select(r => (r.IsSuccess, r.Error));
        await foreach (var result in results.ConfigureAwait(false))
        {
            if (!result.IsSuccess)
            {
                throw new InvalidOperationException($"Measuring {candidate} failed: {result.Error}");
            }

            done++;
            if (!gaveUp && giveUp(done))
            {
                gaveUp = true;
                await stop.CancelAsync().ConfigureAwait(false);
            }
        }

        return (done, gaveUp);
    }

    private static async IAsyncEnumerable<T> Cycle<T>(
        IReadOnlyList<T> sample,
        long count,
        CancellationToken stop,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        for (var i = 0L; i < count && !stop.IsCancellationRequested; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return sample[(int)(i % sample.Count)];
        }

        await Task.CompletedTask.ConfigureAwait(false);
    }

    private bool IsBaseline(Candidate candidate) =>
        Baseline is { } b && candidate.Devices == b.Devices && candidate.Threads == b.Threads && candidate.Batch == b.Batch && candidate.PrepareWorkers == b.PrepareWorkers;

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}
