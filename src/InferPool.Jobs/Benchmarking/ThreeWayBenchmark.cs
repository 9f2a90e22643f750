using System.Diagnostics;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Tuning;
using InferPool.Onnx;
using InferPool.Replicas;
using InferPool.Results;
using Microsoft.ML.OnnxRuntime;

namespace InferPool.Jobs.Benchmarking;

/// <summary>One way's figures: items per second (median of the rounds) and each round's seconds.</summary>
/// <param name="Name">The way.</param>
/// <param name="Configuration">How it ran.</param>
/// <param name="ItemsPerSecond">Items per second, from the median round.</param>
/// <param name="Seconds">Each round's seconds.</param>
public sealed record WayResult(string Name, string Configuration, double ItemsPerSecond, IReadOnlyList<double> Seconds);

/// <summary>
/// The same job (prepare + infer the same items) done three ways in one process, in alternating rounds: the plain
/// loop a user writes first (one session, ONNX Runtime's default threads, batch 1), <c>Parallel.ForEachAsync</c>
/// over one shared session, and InferPool with a given configuration. Sessions and replicas are built before the
/// clock starts for every way, so each round times preparation and inference only.
/// </summary>
public static class ThreeWayBenchmark
{
    /// <summary>Runs the three ways <paramref name="rounds"/> times each, alternating, and returns them in order: plain loop, Parallel.ForEachAsync, InferPool.</summary>
    /// <param name="engine">The model.</param>
    /// <param name="items">The items every way does (<see cref="CycledItemsAsync"/>).</param>
    /// <param name="pooled">InferPool's configuration.</param>
    /// <param name="pooledNote">Said after the configuration (e.g. whether it was tuned).</param>
    /// <param name="parallelism">Parallel calls for the <c>Parallel.ForEachAsync</c> way (the cores, as a user would choose).</param>
    /// <param name="rounds">Rounds, at least 1; the median is reported.</param>
    /// <param name="cancellationToken">Stops the benchmark.</param>
    /// <exception cref="InvalidOperationException">An item failed in one of the ways.</exception>
    public static async Task<IReadOnlyList<WayResult>> RunAsync(OnnxEngine engine, IReadOnlyList<InputItem> items, Candidate pooled, string pooledNote, int parallelism, int rounds, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(pooled);
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        var prepare = new OnnxInputs(engine);
        var ways = new List<(string Name, string Config, IWay Runner)>
        {
            ("plain loop", "1 session, ORT default threads, batch 1", new PlainLoop(engine)),
            ("Parallel.ForEachAsync", $"1 shared session, ORT default threads, {parallelism} parallel calls", new SharedSessionParallel(engine, parallelism)),
            ("InferPool", $"{pooled}{pooledNote}", await PooledWay.CreateAsync(engine, pooled, cancellationToken).ConfigureAwait(false)),
        };
        try
        {
            var seconds = ways.Select(_ => new List<double>()).ToList();
            for (var round = 0; round < rounds; round++)
            {
                for (var w = 0; w < ways.Count; w++)
                {
                    var started = Stopwatch.GetTimestamp();
                    var done = await ways[w].Runner.RunAsync(items, prepare, cancellationToken).ConfigureAwait(false);
                    if (done != items.Count)
                    {
                        throw new InvalidOperationException($"{ways[w].Name} finished {done} of {items.Count} items.");
                    }

                    seconds[w].Add(Stopwatch.GetElapsedTime(started).TotalSeconds);
                }
            }

            return [.. ways.Select((w, i) => new WayResult(w.Name, w.Config, items.Count / Median(seconds[i]), seconds[i]))];
        }
        finally
        {
            foreach (var way in ways)
            {
                await way.Runner.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>The first items of <paramref name="input"/> that prepare cleanly, cycled to <paramref name="count"/>, so every way does the same work.</summary>
    /// <param name="input">The input.</param>
    /// <param name="prepare">The model's preparation.</param>
    /// <param name="count">How many items.</param>
    /// <param name="cancellationToken">Stops the reading.</param>
    /// <exception cref="InvalidDataException">No item of the input prepares cleanly.</exception>
    public static async Task<IReadOnlyList<InputItem>> CycledItemsAsync(InputSource input, OnnxInputs prepare, int count, CancellationToken cancellationToken = default)
    {
        var sample = await Sample.LoadAsync(input, prepare, count, cancellationToken).ConfigureAwait(false);
        return [.. Enumerable.Range(0, count).Select(i => sample.Items[i % sample.Items.Count])];
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private interface IWay : IAsyncDisposable
    {
        /// <summary>Prepares and infers every item; returns how many finished.</summary>
        Task<int> RunAsync(IReadOnlyList<InputItem> items, OnnxInputs prepare, CancellationToken cancellationToken);
    }

    /// <summary>What a user's loop does: one session with ONNX Runtime's default threads, one item at a time.</summary>
    private sealed class PlainLoop(OnnxEngine engine) : IWay
    {
        private readonly InferenceSession _session = new(engine.Model.Path);

        public Task<int> RunAsync(IReadOnlyList<InputItem> items, OnnxInputs prepare, CancellationToken cancellationToken)
        {
            foreach (var item in items)
            {
                cancellationToken.ThrowIfCancellationRequested();
                RunOne(_session, engine.Onnx, prepare.Prepare(item));
            }

            return Task.FromResult(items.Count);
        }

        public ValueTask DisposeAsync()
        {
            _session.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>The usual first fix: Parallel.ForEachAsync over one shared (thread-safe) session.</summary>
    private sealed class SharedSessionParallel(OnnxEngine engine, int parallelism) : IWay
    {
        private readonly InferenceSession _session = new(engine.Model.Path);

        public async Task<int> RunAsync(IReadOnlyList<InputItem> items, OnnxInputs prepare, CancellationToken cancellationToken)
        {
            var done = 0;
            var options = new ParallelOptions { MaxDegreeOfParallelism = parallelism, CancellationToken = cancellationToken };
            await Parallel.ForEachAsync(items, options, (item, _) =>
            {
                RunOne(_session, engine.Onnx, prepare.Prepare(item));
                Interlocked.Increment(ref done);
                return ValueTask.CompletedTask;
            }).ConfigureAwait(false);
            return done;
        }

        public ValueTask DisposeAsync()
        {
            _session.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>InferPool: prepare stage and replicas as a job uses them (no output written), replicas built beforehand.</summary>
    private sealed class PooledWay(OnnxReplicaFactory factory, PrebuiltReplicas<float[], float[][]> replicas, Candidate candidate) : IWay
    {
        public static async Task<PooledWay> CreateAsync(OnnxEngine engine, Candidate candidate, CancellationToken cancellationToken)
        {
            var factory = new OnnxReplicaFactory(engine.Onnx, new OnnxReplicaOptions { IntraOpThreads = candidate.Threads });
            return new PooledWay(factory, await ReplicaFactory.PrebuildAsync(factory, candidate.Plan, cancellationToken).ConfigureAwait(false), candidate);
        }

        public async Task<int> RunAsync(IReadOnlyList<InputItem> items, OnnxInputs prepare, CancellationToken cancellationToken)
        {
            replicas.Reset();
            var done = 0;
            var stage = new PrepareStage<InputItem, float[]>((item, _) => ValueTask.FromResult(prepare.Prepare(item)));
            await foreach (var result in InferencePool.RunAsync(items.ToAsyncEnumerable(), stage, replicas, candidate.PoolOptions(ResultOrder.Input), cancellationToken).ConfigureAwait(false))
            {
                if (!result.IsSuccess)
                {
                    throw new InvalidOperationException($"{result.Item.Key} failed in the InferPool way: {result.Error}");
                }

                done++;
            }

            return done;
        }

        public async ValueTask DisposeAsync()
        {
            await replicas.DisposeAsync().ConfigureAwait(false);
            factory.Dispose();
        }
    }

    /// <summary>One model call on one item, its outputs copied out as a caller would.</summary>
    private static void RunOne(InferenceSession session, OnnxModel model, float[] tensor)
    {
        long[] shape = [1, .. model.Input.ItemShape];
        using var value = OrtValue.CreateTensorValueFromMemory(tensor, shape);
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, [model.Input.Name], [value], [.. model.Outputs.Select(o => o.Name)]);
        foreach (var output in outputs)
        {
            _ = output.GetTensorDataAsSpan<float>().ToArray();
        }
    }
}
