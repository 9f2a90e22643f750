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
        var session = new InferenceSession(engine.Model.Path);
        if (!engine.FeedsImages)
        {
            // A model of any inputs: each record's tensors, one call each, against InferPool's session.
            void Record(IReadOnlyList<InputItem> chunk) => RunTensors(session, engine.Onnx, prepare.PrepareTensors(chunk[0]));
            return await MeasureAsync(
                [
                    ("plain loop", "1 session, ORT default threads, one record per call", new ChunkLoop(Record, 1)),
                    ("Parallel.ForEachAsync", $"1 shared session, ORT default threads, {parallelism} parallel calls", new ChunkParallel(Record, 1, parallelism, session)),
                    ("InferPool", $"{pooled}{pooledNote}", await SessionWay.CreateAsync(engine, pooled, cancellationToken).ConfigureAwait(false)),
                ],
                items,
                rounds,
                cancellationToken).ConfigureAwait(false);
        }

        void One(IReadOnlyList<InputItem> chunk) => RunOne(session, engine.Onnx, prepare.Prepare(chunk[0]));
        var ways = new List<(string Name, string Config, IWay Runner)>
        {
            ("plain loop", "1 session, ORT default threads, batch 1", new ChunkLoop(One, 1)),
            ("Parallel.ForEachAsync", $"1 shared session, ORT default threads, {parallelism} parallel calls", new ChunkParallel(One, 1, parallelism, session)),
            ("InferPool", $"{pooled}{pooledNote}", await PooledWay.CreateAsync(engine, prepare, pooled, cancellationToken).ConfigureAwait(false)),
        };
        return await MeasureAsync(ways, items, rounds, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The same for a text model, and the ways its users write: a plain loop over one session (ONNX Runtime's default
    /// threads) taking the texts in input order in chunks of 32, each chunk padded to its longest text (what
    /// SentenceTransformers-style encoders do); <c>Parallel.ForEachAsync</c> over those chunks with one shared session;
    /// and InferPool's text session (windows sorted by length, calls cut by tokens). Every way tokenizes and pools.
    /// </summary>
    /// <param name="engine">The text model.</param>
    /// <param name="items">The texts every way embeds.</param>
    /// <param name="pooled">InferPool's configuration.</param>
    /// <param name="pooledNote">Said after the configuration.</param>
    /// <param name="parallelism">Parallel calls for the <c>Parallel.ForEachAsync</c> way.</param>
    /// <param name="rounds">Rounds, at least 1.</param>
    /// <param name="cancellationToken">Stops the benchmark.</param>
    /// <exception cref="InvalidOperationException">A text failed in one of the ways.</exception>
    public static async Task<IReadOnlyList<WayResult>> RunAsync(TextEngine engine, IReadOnlyList<InputItem> items, Candidate pooled, string pooledNote, int parallelism, int rounds, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(pooled);
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        const int chunk = 32;
        var session = new InferenceSession(engine.Text.Model.Path);
        void Chunk(IReadOnlyList<InputItem> texts) => RunPadded(session, engine, texts);
        var ways = new List<(string Name, string Config, IWay Runner)>
        {
            ("plain loop", $"1 session, ORT default threads, chunks of {chunk} in input order, padded to the longest", new ChunkLoop(Chunk, chunk)),
            ("Parallel.ForEachAsync", $"1 shared session, ORT default threads, chunks of {chunk}, {parallelism} parallel calls", new ChunkParallel(Chunk, chunk, parallelism, session)),
            ("InferPool", $"{pooled}{pooledNote}", await SessionWay.CreateAsync(engine, pooled, cancellationToken).ConfigureAwait(false)),
        };
        return await MeasureAsync(ways, items, rounds, cancellationToken).ConfigureAwait(false);
    }

    private static async Task<IReadOnlyList<WayResult>> MeasureAsync(List<(string Name, string Config, IWay Runner)> ways, IReadOnlyList<InputItem> items, int rounds, CancellationToken cancellationToken)
    {
        try
        {
            var seconds = ways.Select(_ => new List<double>()).ToList();
            for (var round = 0; round < rounds; round++)
            {
                for (var w = 0; w < ways.Count; w++)
                {
                    var started = Stopwatch.GetTimestamp();
                    var done = await ways[w].Runner.RunAsync(items, cancellationToken).ConfigureAwait(false);
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

    /// <summary>Texts cycled from the start of <paramref name="input"/> (texts that are empty or unusable skipped), <paramref name="count"/> in all, each keyed by its place.</summary>
    /// <param name="input">Texts (<see cref="InputSource.OpenTexts"/>).</param>
    /// <param name="count">How many.</param>
    /// <param name="cancellationToken">Stops the reading.</param>
    /// <exception cref="InvalidDataException">The input holds no usable text.</exception>
    public static async Task<IReadOnlyList<InputItem>> CycledTextsAsync(InputSource input, int count, CancellationToken cancellationToken = default)
    {
        var sample = await Sample.LoadAsync(
            input,
            item => item.Error is null && !string.IsNullOrWhiteSpace(item.Text) ? item : throw new InvalidDataException(item.Error ?? "The text is empty."),
            count,
            cancellationToken).ConfigureAwait(false);
        return [.. Cycle(sample.Items, count).Select((item, i) => item with { Key = $"{item.Key}#{i}" })];
    }

    /// <summary>The first records of <paramref name="input"/> whose tensors read cleanly for a model of any inputs, cycled to <paramref name="count"/>.</summary>
    /// <param name="input">The input.</param>
    /// <param name="prepare">The model's preparation.</param>
    /// <param name="count">How many items.</param>
    /// <param name="cancellationToken">Stops the reading.</param>
    /// <exception cref="InvalidDataException">No record of the input reads cleanly.</exception>
    public static async Task<IReadOnlyList<InputItem>> CycledRecordsAsync(InputSource input, OnnxInputs prepare, int count, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prepare);
        var sample = await Sample.LoadAsync(input, prepare.PrepareTensors, count, cancellationToken).ConfigureAwait(false);
        return Cycle(sample.Items, count);
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
        return Cycle(sample.Items, count);
    }

    private static InputItem[] Cycle(IReadOnlyList<InputItem> items, int count) => [.. Enumerable.Range(0, count).Select(i => items[i % items.Count])];

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private interface IWay : IAsyncDisposable
    {
        /// <summary>Prepares and infers every item; returns how many finished.</summary>
        Task<int> RunAsync(IReadOnlyList<InputItem> items, CancellationToken cancellationToken);
    }

    /// <summary>What a user's loop does: one call after another over chunks of the items, in input order.</summary>
    private sealed class ChunkLoop(Action<IReadOnlyList<InputItem>> call, int chunk) : IWay
    {
        public Task<int> RunAsync(IReadOnlyList<InputItem> items, CancellationToken cancellationToken)
        {
            foreach (var part in items.Chunk(chunk))
            {
                cancellationToken.ThrowIfCancellationRequested();
                call(part);
            }

            return Task.FromResult(items.Count);
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    /// <summary>The usual first fix: Parallel.ForEachAsync over the chunks, sharing one (thread-safe) session.</summary>
    private sealed class ChunkParallel(Action<IReadOnlyList<InputItem>> call, int chunk, int parallelism, InferenceSession session) : IWay
    {
        public async Task<int> RunAsync(IReadOnlyList<InputItem> items, CancellationToken cancellationToken)
        {
            var done = 0;
            var options = new ParallelOptions { MaxDegreeOfParallelism = parallelism, CancellationToken = cancellationToken };
            await Parallel.ForEachAsync(items.Chunk(chunk), options, (part, _) =>
            {
                call(part);
                Interlocked.Add(ref done, part.Length);
                return ValueTask.CompletedTask;
            }).ConfigureAwait(false);
            return done;
        }

        public ValueTask DisposeAsync()
        {
            session.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>InferPool: prepare stage and replicas as a job uses them (no output written), replicas built beforehand.</summary>
    private sealed class PooledWay(OnnxReplicaFactory factory, PrebuiltReplicas<float[], float[][]> replicas, Candidate candidate, OnnxInputs prepare) : IWay
    {
        public static async Task<PooledWay> CreateAsync(OnnxEngine engine, OnnxInputs prepare, Candidate candidate, CancellationToken cancellationToken)
        {
            var factory = new OnnxReplicaFactory(engine.Onnx, new OnnxReplicaOptions { IntraOpThreads = candidate.Threads });
            return new PooledWay(factory, await ReplicaFactory.PrebuildAsync(factory, candidate.Plan, cancellationToken).ConfigureAwait(false), candidate, prepare);
        }

        public async Task<int> RunAsync(IReadOnlyList<InputItem> items, CancellationToken cancellationToken)
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

    /// <summary>InferPool through an engine's session, as a job runs it (rows made, none written), replicas built beforehand.</summary>
    private sealed class SessionWay(EngineSession session, Candidate candidate) : IWay
    {
        public static async Task<SessionWay> CreateAsync(JobEngine engine, Candidate candidate, CancellationToken cancellationToken)
        {
            var session = engine.OpenSession(new EngineSessionOptions { IntraOpThreads = candidate.Threads, KeepReplicas = true }, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
            await session.StartAsync(candidate.Plan, cancellationToken).ConfigureAwait(false);
            return new SessionWay(session, candidate);
        }

        public async Task<int> RunAsync(IReadOnlyList<InputItem> items, CancellationToken cancellationToken)
        {
            var done = 0;
            await foreach (var row in session.RunAsync(items.ToAsyncEnumerable(), candidate.PoolOptions(ResultOrder.Input), cancellationToken).ConfigureAwait(false))
            {
                done += row.Ok ? 1 : throw new InvalidOperationException($"{row.Key} failed in the InferPool way: {row.Error}");
            }

            return done;
        }

        public ValueTask DisposeAsync() => session.DisposeAsync();
    }

    /// <summary>A chunk of texts as one call, padded to its longest text, pooled: what an encoder package does.</summary>
    private static void RunPadded(InferenceSession session, TextEngine engine, IReadOnlyList<InputItem> texts)
    {
        var items = texts.Select(t => engine.Text.Prepare(t.Text!)).ToArray();
        var width = items.Max(i => i.Inputs[0].Length);
        var model = engine.Text.Model;
        var values = new OrtValue[model.Inputs.Count];
        try
        {
            for (var i = 0; i < values.Length; i++)
            {
                // The model's own id type (int64, or int32 for some exports), zero-padded.
                var data = Onnx.Tensors.TensorData.NewArray(model.Inputs[i].ElementType, items.Length * width);
                for (var r = 0; r < items.Length; r++)
                {
                    var ids = items[r].Inputs[i].Values;
                    Array.Copy(ids, 0, data, r * width, ids.Length);
                }

                values[i] = Onnx.Tensors.TensorData.ToOrtValue(data, [items.Length, width]);
            }

            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, [.. model.Inputs.Select(i => i.Name)], values, [model.Outputs[engine.Text.TokenOutput].Name]);
            var tokens = outputs[0].GetTensorDataAsSpan<float>();
            var hidden = engine.Text.Dimensions;
            for (var r = 0; r < items.Length; r++)
            {
                var length = items[r].Inputs[0].Length;
                var one = tokens.Slice(r * width * hidden, length * hidden).ToArray();
                _ = engine.Text.Embed(new Onnx.Tensors.TensorOutputs([Onnx.Tensors.TensorData.Create(one, length, hidden)]));
            }
        }
        finally
        {
            foreach (var value in values)
            {
                value?.Dispose();
            }
        }
    }

    /// <summary>One model call on one record's tensors, its outputs copied out as a caller would.</summary>
    private static void RunTensors(InferenceSession session, OnnxModel model, Onnx.Tensors.TensorItem item)
    {
        var values = item.Inputs.Select(t => Onnx.Tensors.TensorData.ToOrtValue(t.Values, item.HasBatchDimension ? t.Shape : [1, .. t.Shape])).ToArray();
        try
        {
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, [.. model.Inputs.Select(i => i.Name)], values, [.. model.Outputs.Select(o => o.Name)]);
            foreach (var output in outputs)
            {
                _ = Onnx.Tensors.TensorData.FromOrtValue(output);
            }
        }
        finally
        {
            foreach (var value in values)
            {
                value.Dispose();
            }
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
