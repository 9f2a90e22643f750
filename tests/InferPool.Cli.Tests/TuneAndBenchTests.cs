using System.Text.Json;
using InferPool.Jobs.Tuning;
using InferPool.Devices;
using InferPool.Onnx.Tests;

namespace InferPool.Cli.Tests;

/// <summary><c>inferpool tune</c>, <c>run --config</c> and <c>inferpool bench</c> on a tiny real model (y = 2x + 1).</summary>
public sealed class TuneAndBenchTests : TempFolderTest
{
    private string WriteTinyJob()
    {
        var model = TinyModels.Affine(Dir, symbolicBatch: true);
        Write("in.jsonl", string.Join('\n', Enumerable.Range(0, 40).Select(i => $$"""{"key": "k{{i}}", "input": [{{i}}, 1, 2, 3]}""")));
        return model;
    }

    [Fact]
    public async Task Tune_saves_the_fastest_measured_configuration_and_run_uses_it()
    {
        var model = WriteTinyJob();

        var tune = await Cli.RunAsync(Dir, "tune", "in.jsonl", "--model", model, "--budget", "4s", "--sample", "8", "-o", "tuned.json");

        Assert.True(tune.ExitCode == 0, tune.Out + tune.Err);
        var config = TunedConfig.Load(Path.Combine(Dir, "tuned.json"));
        Assert.NotEmpty(config.Trials);
        // The winner is the fastest measured (or the defaults, when it beat them by 5% or less), so an oversubscribed
        // split never wins over a faster one that is not.
        AssertChosen(config, maxModelBatch: null);
        Assert.Matches("^cpu=[0-9]+$", config.Devices);
        // Each trial is marked oversubscribed exactly when its replicas × threads exceed the cores.
        var cores = Environment.ProcessorCount;
        Assert.All(config.Trials, t => Assert.Equal(DeviceSpec.Parse(t.Devices).Resolve(NvmlDeviceInventory.Discover()).TotalReplicas * t.Threads > cores, t.Oversubscribed));
        Assert.Contains(config.Trials, t => t.Oversubscribed);
        Assert.All(config.Trials, t => Assert.True(t.ItemsPerSecond > 0));

        var run = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "--config", "tuned.json", "-o", "out", "--format", "jsonl");

        Assert.True(run.ExitCode == 0, run.Out + run.Err);
        Assert.Contains("Using the tuned configuration in", run.Out, StringComparison.Ordinal);
        Assert.Contains($"on {DeviceSpec.Parse(config.Devices).Resolve(NvmlDeviceInventory.Discover())} (batch {config.Batch};", run.Out, StringComparison.Ordinal);
        var rows = File.ReadLines(Directory.GetFiles(Path.Combine(Dir, "out"), "part-*.jsonl").Single()).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(40, rows.Count);
        Assert.All(rows, r => Assert.Equal((2 * int.Parse(r.GetProperty("key").GetString()![1..], System.Globalization.CultureInfo.InvariantCulture)) + 1, r.GetProperty("y")[0].GetSingle()));
    }

    [Fact]
    public async Task Tune_on_images_measures_with_decoding_and_tries_the_best_with_fewer_prepare_workers()
    {
        // The built-in ResNet-18 on six sample images: each trial decodes the files on prepare workers while the
        // replicas infer, as a job does, and the best of the first pass is measured again with half the workers.
        Directory.CreateDirectory(Path.Combine(Dir, "images"));
        foreach (var file in Directory.GetFiles(TestFiles.SampleImages, "*.png").Order(StringComparer.Ordinal).Take(6))
        {
            File.Copy(file, Path.Combine(Dir, "images", Path.GetFileName(file)));
        }

        var tune = await Cli.RunAsync(Dir, "tune", "images", "--budget", "15s", "--sample", "6", "-o", "tuned.json");

        Assert.True(tune.ExitCode == 0, tune.Out + tune.Err);
        Assert.Contains("images decoded as a job decodes them", tune.Out, StringComparison.Ordinal);
        var config = TunedConfig.Load(Path.Combine(Dir, "tuned.json"));
        AssertChosen(config, maxModelBatch: null);
        var cores = Environment.ProcessorCount;
        if (cores > 1)
        {
            var fewer = Assert.Single(config.Trials, t => t.PrepareWorkers is not null);
            Assert.Equal(cores / 2, fewer.PrepareWorkers);
        }

        var run = await Cli.RunAsync(Dir, "run", "images", "--config", "tuned.json", "-o", "out");

        Assert.True(run.ExitCode == 0, run.Out + run.Err);
        Assert.Contains("Done: 6 items, 6 ok", run.Out, StringComparison.Ordinal);
        if (config.PrepareWorkers is { } workers)
        {
            Assert.Contains($"{workers} prepare worker(s)", run.Out, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Tune_and_bench_a_text_model_on_texts_and_run_uses_the_tuned_window()
    {
        var model = TinyModels.TinyBert(Dir);
        File.Copy(Path.Combine(Cli.ToolDirectory, "models", "minilm", "vocab.txt"), Path.Combine(Dir, "vocab.txt"));
        Write("texts.txt", string.Join('\n', File.ReadLines(Path.Combine(Cli.ToolDirectory, "samples", "texts", "sample.txt")).Take(60)));

        var tune = await Cli.RunAsync(Dir, "tune", "texts.txt", "--model", model, "--tokenizer", "vocab.txt", "--budget", "4s", "-o", "tuned.json");

        Assert.True(tune.ExitCode == 0, tune.Out + tune.Err);
        Assert.Contains("(model inference on tokenized texts)", tune.Out, StringComparison.Ordinal);
        var config = TunedConfig.Load(Path.Combine(Dir, "tuned.json"));
        Assert.All(config.Trials, t => Assert.Contains(t.Batch, new[] { 256, 1024 }));
        Assert.Contains(config.Trials, t => t.Batch == 256);
        Assert.Contains(config.Trials, t => t.Batch == 1024);

        var run = await Cli.RunAsync(Dir, "run", "texts.txt", "--model", model, "--tokenizer", "vocab.txt", "--config", "tuned.json", "-o", "out", "--format", "jsonl");

        Assert.True(run.ExitCode == 0, run.Out + run.Err);
        Assert.Contains("Using the tuned configuration in", run.Out, StringComparison.Ordinal);
        Assert.Contains($"(batch {config.Batch}; mean pooling", run.Out, StringComparison.Ordinal);

        var bench = await Cli.RunAsync(Dir, "bench", "texts.txt", "--model", model, "--tokenizer", "vocab.txt", "--items", "64", "--rounds", "1", "--json");

        Assert.True(bench.ExitCode == 0, bench.Out + bench.Err);
        var report = JsonDocument.Parse(bench.Out).RootElement;
        var ways = report.GetProperty("ways").EnumerateArray().ToList();
        Assert.Equal(["plain loop", "Parallel.ForEachAsync", "InferPool"], ways.Select(w => w.GetProperty("name").GetString()));
        Assert.Contains("chunks of 32 in input order, padded to the longest", ways[0].GetProperty("configuration").GetString(), StringComparison.Ordinal);
        Assert.All(ways, w => Assert.True(w.GetProperty("items_per_second").GetDouble() > 0));
    }

    [Fact]
    public async Task Run_finds_a_config_in_the_output_folder_and_ignores_one_from_another_machine()
    {
        var model = WriteTinyJob();
        var sha = InferPool.Onnx.OnnxModel.Load(model).Sha256;
        var machine = TunedConfig.MachineOf(NvmlDeviceInventory.Discover());
        Directory.CreateDirectory(Path.Combine(Dir, "out"));
        await new TunedConfig("affine", sha, machine, "cpu=1", 1, 3, 100, DateTimeOffset.UtcNow, []).SaveAsync(Path.Combine(Dir, "out", TunedConfig.FileName));

        var found = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "-o", "out", "--format", "jsonl");

        Assert.True(found.ExitCode == 0, found.Out + found.Err);
        Assert.Contains("on cpu (batch 3;", found.Out, StringComparison.Ordinal);

        await new TunedConfig("affine", sha, "64 cores, 8 × Imaginary GPU", "cpu=9", 1, 3, 100, DateTimeOffset.UtcNow, []).SaveAsync(Path.Combine(Dir, "out2", TunedConfig.FileName));
        var other = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "-o", "out2", "--format", "jsonl");

        Assert.True(other.ExitCode == 0, other.Out + other.Err);
        Assert.Contains("was measured on 64 cores, 8 × Imaginary GPU", other.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("cpu=9", other.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_config_for_another_machine_is_refused_when_named_as_the_readme_says()
    {
        var model = WriteTinyJob();
        var sha = InferPool.Onnx.OnnxModel.Load(model).Sha256;
        await new TunedConfig("affine", sha, "64 cores, 8 × Imaginary GPU", "cpu=9", 1, 3, 100, DateTimeOffset.UtcNow, []).SaveAsync(Path.Combine(Dir, "elsewhere.json"));

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "--config", "elsewhere.json", "-o", "out");

        Assert.True(code == 2, stdout + stderr);
        Assert.Contains("--config: elsewhere.json was measured on 64 cores, 8 × Imaginary GPU", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(Dir, "out")), "nothing should run");
    }

    [Fact]
    public async Task A_config_for_another_model_is_refused_when_named()
    {
        var model = WriteTinyJob();
        await new TunedConfig("resnet18", new string('a', 64), "x", "cpu", 1, 1, 1, DateTimeOffset.UtcNow, []).SaveAsync(Path.Combine(Dir, "other.json"));

        var (code, _, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "--config", "other.json", "-o", "out");

        Assert.Equal(2, code);
        Assert.Contains("was tuned for model resnet18", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_times_three_ways_and_draws_a_chart()
    {
        var model = WriteTinyJob();

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "bench", "in.jsonl", "--model", model, "--items", "60", "--rounds", "2", "--json", "--chart", "bench.png");

        Assert.True(code == 0, stdout + stderr);
        using var report = JsonDocument.Parse(stdout);
        var ways = report.RootElement.GetProperty("ways").EnumerateArray().ToList();
        Assert.Equal(["plain loop", "Parallel.ForEachAsync", "InferPool"], ways.Select(w => w.GetProperty("name").GetString()));
        Assert.Equal(1.0, ways[0].GetProperty("ratio_to_plain_loop").GetDouble());
        Assert.All(ways, w => Assert.Equal(2, w.GetProperty("seconds").GetArrayLength()));
        Assert.All(ways, w => Assert.True(w.GetProperty("items_per_second").GetDouble() > 0));

        // The figures agree with each other: each rate is the items over the median round, each ratio the rates', and no
        // way is a hundred times off the others (the sign of a rate counted wrong, not of a slow machine).
        var plain = ways[0].GetProperty("items_per_second").GetDouble();
        foreach (var way in ways)
        {
            var rate = way.GetProperty("items_per_second").GetDouble();
            var seconds = way.GetProperty("seconds").EnumerateArray().Select(e => e.GetDouble()).Order().ToList();
            var mean = (seconds[0] + seconds[1]) / 2;
            Assert.Equal(60 / mean, rate, rate * (0.02 + (0.001 / mean))); // the JSON rounds seconds to 1 ms
            Assert.Equal(rate / plain, way.GetProperty("ratio_to_plain_loop").GetDouble(), 0.01);
            Assert.InRange(rate / plain, 0.01, 100);
        }

        var png = File.ReadAllBytes(Path.Combine(Dir, "bench.png"));
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], png[..4]);
    }

    [Fact]
    public void Choose_keeps_the_defaults_unless_another_is_faster_by_more_than_the_margin()
    {
        var model = InferPool.Onnx.OnnxModel.Load(TinyModels.Affine(Dir, symbolicBatch: true));
        var defaults = new Candidate(ReplicaPlan.Cpu(2), 1, 1);
        var batched = new Candidate(ReplicaPlan.Cpu(2), 1, 4);
        var fewerWorkers = defaults with { PrepareWorkers = 1 };
        var tuner = new Tuner(model, TimeProvider.System) { Baseline = new Candidate(ReplicaPlan.Cpu(2), 1, 1) };
        TrialResult Trial(Candidate c, double rate, bool early = false) => new(c, rate, 2, early);

        // 4% faster: within what short trials differ by, so the defaults stay (matched by value, not by instance).
        var close = new[] { Trial(batched, 52), Trial(defaults, 50) };
        Assert.Same(close[1], tuner.Choose(close));
        // 10% faster: a clear win.
        var clear = new[] { Trial(batched, 55), Trial(defaults, 50) };
        Assert.Same(clear[0], tuner.Choose(clear));
        // The same plan with fewer prepare workers is another configuration: it too must win by the margin.
        var workers = new[] { Trial(fewerWorkers, 51), Trial(defaults, 50) };
        Assert.Same(workers[1], tuner.Choose(workers));
        // Defaults stopped early for being clearly slower, or not measured at all, or no baseline: the fastest.
        Assert.Same(close[0], tuner.Choose([close[0], Trial(defaults, 50, early: true)]));
        Assert.Same(close[0], tuner.Choose([close[0], Trial(new Candidate(ReplicaPlan.Cpu(1), 2, 1), 50)]));
        Assert.Same(close[0], new Tuner(model, TimeProvider.System).Choose(close));
        // A margin of zero: the fastest always.
        Assert.Same(close[0], new Tuner(model, TimeProvider.System) { Baseline = defaults, Margin = 0 }.Choose(close));
    }

    /// <summary>The saved configuration is the fastest trial, or the run's defaults when the fastest beat them by 5% or less.</summary>
    private static void AssertChosen(TunedConfig config, int? maxModelBatch)
    {
        var fastest = config.Trials.MaxBy(t => t.ItemsPerSecond)!;
        var defaults = Candidate.Defaults(NvmlDeviceInventory.Discover(), maxModelBatch);
        var baseline = config.Trials.SingleOrDefault(t => (t.Devices, t.Threads, t.Batch, t.PrepareWorkers) == (defaults.Devices, defaults.Threads, defaults.Batch, null));
        var expected = baseline is { StoppedEarly: false } && fastest.ItemsPerSecond <= baseline.ItemsPerSecond * 1.05 ? baseline : fastest;
        Assert.Equal((expected.Devices, expected.Threads, expected.Batch, expected.PrepareWorkers), (config.Devices, config.Threads, config.Batch, config.PrepareWorkers));
    }

    [Theory]
    [InlineData(2, "cpu,2,1|cpu,2,4|cpu=2,1,1|cpu=2,1,4|cpu=2,2,1")]
    [InlineData(4, "cpu,4,1|cpu,4,4|cpu=2,2,1|cpu=2,2,4|cpu=4,1,1|cpu=4,1,4|cpu=4,2,1")]
    public void Cpu_candidates_split_the_cores_and_include_one_oversubscribed_split(int cores, string expected)
    {
        var candidates = Candidate.For(ReplicaPlan.Cpu(1), cores, maxModelBatch: null);

        Assert.Equal(expected, string.Join('|', candidates.Select(c => $"{c.Plan},{c.Threads},{c.Batch}")));
        Assert.Single(candidates, c => c.Oversubscribed(cores));
    }

    [Fact]
    public void A_model_that_cannot_batch_is_tried_at_batch_1_only()
    {
        Assert.All(Candidate.For(ReplicaPlan.Cpu(1), 4, maxModelBatch: 1), c => Assert.Equal(1, c.Batch));
    }
}
