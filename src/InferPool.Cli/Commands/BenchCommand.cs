using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using InferPool.Cli.Inputs;
using InferPool.Cli.Jobs;
using InferPool.Cli.Models;
using InferPool.Cli.Output;
using InferPool.Cli.Tuning;
using InferPool.Devices;
using InferPool.Onnx;
using InferPool.Results;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>
/// <c>inferpool bench</c>: the same job (prepare + infer the same items) done three ways in one process, in
/// alternating rounds: the plain loop, <c>Parallel.ForEachAsync</c> over one shared session, and InferPool with
/// the tuned (or default) configuration. Sessions and replicas are built before the clock starts for every way.
/// </summary>
internal sealed class BenchCommand : AsyncCommand<BenchSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, BenchSettings settings, CancellationToken cancellationToken)
    {
        var console = AnsiConsole.Console;
        var errors = Console.Error;
        var logger = new ConsoleLogger(errors, LogLevel.Warning);
        try
        {
            var engine = OnnxEngine.Load(settings.Model, logger);
            var model = engine.Model;
            var input = InputSource.Open(settings.Input ?? InputSource.SampleImages);
            var inventory = NvmlDeviceInventory.Discover();
            var prepare = new OnnxInputs(engine, 100_000_000);
            var items = await CycledItemsAsync(input, prepare, settings.Items, cancellationToken).ConfigureAwait(false);
            var pooled = PooledCandidate(settings, engine, inventory, logger, out var configNote);

            var ways = new List<Way>
            {
                new("plain loop", "1 session, ORT default threads, batch 1", new PlainLoop(engine)),
                new("Parallel.ForEachAsync", $"1 shared session, ORT default threads, {inventory.CpuCores} parallel calls", new SharedSessionParallel(engine, inventory.CpuCores)),
                new("InferPool", $"{pooled}{configNote}", await PooledWay.CreateAsync(engine, pooled, cancellationToken).ConfigureAwait(false)),
            };
            if (!settings.Json)
            {
                console.WriteLine($"{items.Count} items of {input.Description} with {model.Name}, {settings.Rounds} round(s), ways alternating; {TunedConfig.MachineOf(inventory)}.");
            }

            var seconds = ways.ToDictionary(w => w, _ => new List<double>());
            for (var round = 0; round < settings.Rounds; round++)
            {
                foreach (var way in ways)
                {
                    var started = Stopwatch.GetTimestamp();
                    var done = await way.Runner.RunAsync(items, prepare, cancellationToken).ConfigureAwait(false);
                    if (done != items.Count)
                    {
                        throw new InvalidOperationException($"{way.Name} finished {done} of {items.Count} items.");
                    }

                    seconds[way].Add(Stopwatch.GetElapsedTime(started).TotalSeconds);
                }
            }

            foreach (var way in ways)
            {
                await way.Runner.DisposeAsync().ConfigureAwait(false);
            }

            var rates = ways.Select(w => (Way: w, Rate: items.Count / Median(seconds[w]))).ToList();
            var baseline = rates[0].Rate;
            if (settings.Json)
            {
                var report = new BenchReport(
                    model.Name,
                    TunedConfig.MachineOf(inventory),
                    items.Count,
                    settings.Rounds,
                    [.. rates.Select(r => new BenchWay(r.Way.Name, r.Way.Config, Math.Round(r.Rate, 2), Math.Round(r.Rate / baseline, 3), [.. seconds[r.Way].Select(s => Math.Round(s, 3))]))]);
                console.Profile.Out.Writer.WriteLine(JsonSerializer.Serialize(report, CliJson.Default.BenchReport));
            }
            else
            {
                var table = new Table().AddColumns("way", "configuration", $"items/s (median of {settings.Rounds})", "× plain loop");
                foreach (var (way, rate) in rates)
                {
                    table.AddRow(Markup.Escape(way.Name), Markup.Escape(way.Config), rate.ToString("F1", CultureInfo.InvariantCulture), (rate / baseline).ToString("F2", CultureInfo.InvariantCulture));
                }

                console.Write(table);
            }

            if (settings.Chart is { } chart)
            {
                if (ThroughputChart.Save(chart, $"{model.Name}: {items.Count} items, {TunedConfig.MachineOf(inventory)}", [.. rates.Select(r => (r.Way.Name, r.Rate))]) is { } warning)
                {
                    logger.LogWarning("Chart: {Warning}.", warning);
                }

                if (!settings.Json)
                {
                    console.WriteLine($"Chart: {Path.GetFullPath(chart)}");
                }
            }

            return ExitCodes.Ok;
        }
        catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException or NotSupportedException or InvalidOperationException or IOException or UnauthorizedAccessException or OnnxRuntimeException)
        {
            errors.WriteLine($"inferpool: {ex.Message}");
            return ExitCodes.JobFailed;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            errors.WriteLine("inferpool: bench stopped.");
            return ExitCodes.Interrupted;
        }
    }

    /// <summary>The tuned configuration when there is one for this model and machine, else what run would use by default.</summary>
    private static Candidate PooledCandidate(BenchSettings settings, OnnxEngine engine, NvmlDeviceInventory inventory, ILogger logger, out string note)
    {
        var path = settings.Config ?? TunedConfig.BesideModel(engine.Model.Path);
        if (File.Exists(path))
        {
            var config = TunedConfig.Load(path);
            if (config.ModelSha256 == engine.Onnx.Sha256 && config.Machine == TunedConfig.MachineOf(inventory))
            {
                note = " (tuned)";
                return new Candidate(DeviceSpec.Parse(config.Devices).Resolve(inventory), config.Threads, config.Batch);
            }

            if (settings.Config is not null)
            {
                throw new InvalidDataException($"{path} was tuned for {config.Model} on {config.Machine}, not {engine.Name} on {TunedConfig.MachineOf(inventory)}.");
            }

            logger.LogWarning("Ignoring {Path}: it was tuned for another model or machine.", path);
        }

        note = " (run's defaults; 'inferpool tune' may find better)";
        var plan = DeviceSpec.Parse("auto").Resolve(inventory, d => RunCommand.DefaultReplicas(d, inventory.CpuCores, null));
        var cpuReplicas = plan.Devices.Where(d => !d.Device.IsGpu).Sum(d => d.Replicas);
        var batch = Math.Min(RunCommand.DefaultBatch(plan), engine.Onnx.MaxBatchSize ?? int.MaxValue);
        return new Candidate(plan, Math.Max(1, inventory.CpuCores / Math.Max(1, cpuReplicas)), batch);
    }

    private static async Task<IReadOnlyList<InputItem>> CycledItemsAsync(InputSource input, OnnxInputs prepare, int count, CancellationToken cancellationToken)
    {
        // Only items that prepare cleanly, so every way does the same work; checked on the first ones.
        var usable = new List<InputItem>();
        await foreach (var item in input.ReadAsync().WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            try
            {
                prepare.Prepare(item);
                usable.Add(item);
            }
            catch (Exception ex) when (ex is InvalidDataException or IOException or UnauthorizedAccessException or NotSupportedException)
            {
                // Left out of the benchmark.
            }

            if (usable.Count == count)
            {
                break;
            }
        }

        if (usable.Count == 0)
        {
            throw new InvalidDataException($"No usable item in {input.Description} to benchmark with.");
        }

        return [.. Enumerable.Range(0, count).Select(i => usable[i % usable.Count])];
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private sealed record Way(string Name, string Config, IWayRunner Runner);

    private interface IWayRunner : IAsyncDisposable
    {
        /// <summary>Prepares and infers every item; returns how many finished.</summary>
        Task<int> RunAsync(IReadOnlyList<InputItem> items, OnnxInputs prepare, CancellationToken cancellationToken);
    }

    /// <summary>What a user's loop does: one session with ONNX Runtime's default threads, one item at a time.</summary>
    private sealed class PlainLoop(OnnxEngine engine) : IWayRunner
    {
        private readonly InferenceSession _session = new(engine.Model.Path);

        public Task<int> RunAsync(IReadOnlyList<InputItem> items, OnnxInputs prepare, CancellationToken cancellationToken)
        {
            foreach (var item in items)
            {
                cancellationToken.ThrowIfCancellationRequested();
                RunOne(_session, engine, prepare.Prepare(item));
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
    private sealed class SharedSessionParallel(OnnxEngine engine, int parallelism) : IWayRunner
    {
        private readonly InferenceSession _session = new(engine.Model.Path);

        public async Task<int> RunAsync(IReadOnlyList<InputItem> items, OnnxInputs prepare, CancellationToken cancellationToken)
        {
            var done = 0;
            var options = new ParallelOptions { MaxDegreeOfParallelism = parallelism, CancellationToken = cancellationToken };
            await Parallel.ForEachAsync(items, options, (item, _) =>
            {
                RunOne(_session, engine, prepare.Prepare(item));
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

    /// <summary>InferPool: prepare stage and replicas as run uses them (no output written), replicas built beforehand.</summary>
    private sealed class PooledWay : IWayRunner
    {
        private readonly OnnxReplicaFactory _factory;
        private readonly PrebuiltReplicas<float[], float[][]> _replicas;
        private readonly Candidate _candidate;

        private PooledWay(OnnxReplicaFactory factory, PrebuiltReplicas<float[], float[][]> replicas, Candidate candidate)
        {
            _factory = factory;
            _replicas = replicas;
            _candidate = candidate;
        }

        public static async Task<PooledWay> CreateAsync(OnnxEngine engine, Candidate candidate, CancellationToken cancellationToken)
        {
            var factory = new OnnxReplicaFactory(engine.Onnx, new OnnxReplicaOptions { IntraOpThreads = candidate.Threads });
            return new PooledWay(factory, await PrebuiltReplicas<float[], float[][]>.BuildAsync(factory, candidate.Plan, cancellationToken).ConfigureAwait(false), candidate);
        }

        public async Task<int> RunAsync(IReadOnlyList<InputItem> items, OnnxInputs prepare, CancellationToken cancellationToken)
        {
            _replicas.Reset();
            var options = _candidate.PoolOptions(ResultOrder.Input);
            var done = 0;
            var stage = new PrepareStage<InputItem, float[]>((item, _) => ValueTask.FromResult(prepare.Prepare(item)));
            await foreach (var result in InferencePool.RunAsync(items.ToAsyncEnumerable(), stage, _replicas, options, cancellationToken).ConfigureAwait(false))
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
            await _replicas.DisposeAsync().ConfigureAwait(false);
            _factory.Dispose();
        }
    }

    /// <summary>One model call on one item, its outputs copied out as a caller would.</summary>
    private static void RunOne(InferenceSession session, OnnxEngine engine, float[] tensor)
    {
        long[] shape = [1, .. engine.Onnx.Input.ItemShape];
        using var value = OrtValue.CreateTensorValueFromMemory(tensor, shape);
        using var outputs = session.Run(new RunOptions(), [engine.Onnx.Input.Name], [value], [.. engine.Onnx.Outputs.Select(o => o.Name)]);
        foreach (var output in outputs)
        {
            _ = output.GetTensorDataAsSpan<float>().ToArray();
        }
    }
}

/// <summary>bench --json.</summary>
internal sealed record BenchReport(string Model, string Machine, int Items, int Rounds, IReadOnlyList<BenchWay> Ways);

/// <summary>One way's figures: items per second (median), ratio to the plain loop, and each round's seconds.</summary>
internal sealed record BenchWay(string Name, string Configuration, double ItemsPerSecond, double RatioToPlainLoop, IReadOnlyList<double> Seconds);
