// Whole-job benchmark: `inferpool run` end to end (decode included) against a raw ONNX Runtime loop over the same
// images already decoded, all measured from this one process. A selection pass picks the raw loop's best layout; then
// each round times that loop, the job in process and (with --command or --tool) the command one after another, in an
// order that rotates each round. It prints each way's median rate, the median of the rounds' ratios to the raw loop,
// and CPU time per image, which a busy neighbour on a shared machine moves less than it moves wall time.
// Usage: dotnet run -c Release --project bench/InferPool.Bench -- [--repeat 10] [--rounds 3] [--command | --tool PATH]
// (--command: also the built CLI as a new process, start to exit; --tool: an inferpool installed from its package instead;
// --repeat 50 is the 1,000-image job)
using System.Diagnostics;
using System.Globalization;
using InferPool.Bench;
using InferPool.Images;
using InferPool.Jobs;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Parts;
using InferPool.Jobs.Tuning;
using InferPool.Devices;
using InferPool.Onnx;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;

if (args.Contains("--cluster-scale"))
{
    // bash bench/cluster/scale.sh starts a throwaway PostgreSQL and passes its connection string here.
    var connection = args[Array.IndexOf(args, "--connection") + 1];
    await ClusterScaleBench.RunAsync(connection, Arg("--nodes", 100), Arg("--items", 1_000_000), Arg("--shard-size", 100), Arg("--work-ms", 20), Arg("--dim", 16));
    return;
}

if (args.Contains("--text") && !args.Contains("--memory"))
{
    await TextBench.RunAsync(Arg("--rounds", 3), args.Contains("--texts") ? args[Array.IndexOf(args, "--texts") + 1] : null);
    return;
}

var repeat = Arg("--repeat", 10);
var rounds = Arg("--rounds", 3);
var cores = Environment.ProcessorCount;
var images = Path.Combine(AppContext.BaseDirectory, "samples", "images");
var files = Directory.GetFiles(images).Where(f => InputSource.ImageExtensions.Contains(Path.GetExtension(f))).Order(StringComparer.Ordinal).ToArray();
var work = Directory.CreateTempSubdirectory("inferpool-bench-").FullName;
var list = Path.Combine(work, "inputs.txt");
File.WriteAllLines(list, Enumerable.Repeat(files, repeat).SelectMany(f => f));
var items = files.Length * repeat;

var choice = ModelChoice.Resolve("resnet18");
var onnx = OnnxModel.Load(choice.Path);
var preprocessor = new ImagePreprocessor(choice.Normalization);
var decoded = files.Select(preprocessor.PrepareFile).ToArray();
if (args.Contains("--memory"))
{
    // --sizes 1000000,3000000: other input counts (to see whether a growth levels off past a million, say).
    int[]? sizes = args.Contains("--sizes") ? [.. args[Array.IndexOf(args, "--sizes") + 1].Split(',').Select(n => int.Parse(n, CultureInfo.InvariantCulture))] : null;
    if (args.Contains("--text"))
    {
        await MemoryBench.RunTextAsync(work, sizes ?? (args.Contains("--quick") ? [2_000, 20_000] : [10_000, 100_000, 1_000_000]));
    }
    else
    {
        await MemoryBench.RunAsync(work, sizes ?? (args.Contains("--large") ? [10_000, 100_000, 1_000_000] : [10_000, 100_000]));
    }

    if (!args.Contains("--keep"))
    {
        Directory.Delete(work, recursive: true);
    }
    else
    {
        Console.WriteLine($"kept {work}");
    }

    return;
}

if (args.Contains("--startup"))
{
    // The job's phases as figures (what `inferpool run -v` logs): when each step was reached, and the replicas' busy
    // share. The first run of the process pays for loading the runtime and compiling code; later runs do not.
    for (var run = 1; run <= rounds; run++)
    {
        var options = new JobOptions { Input = InputSource.Open(list), Engine = new OnnxEngine(choice, onnx), OutputDirectory = Path.Combine(work, "out"), Plan = ReplicaPlan.Cpu(JobDefaults.CpuReplicas(cores, null)), PrepareWorkers = cores, RowsPerPart = 10_000, DuplicateKeys = DuplicateKeys.MakeUnique, Force = true };
        var summary = await new InferenceJob(options, NullLogger.Instance, TimeProvider.System).RunAsync();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"run {run}: {items} items, busy {summary.Final.Devices.Sum(d => d.BusyFraction * d.ReplicasPlanned) / summary.Final.Devices.Sum(d => d.ReplicasPlanned):P0}"));
        foreach (var phase in summary.Phases)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {phase.At.TotalMilliseconds,7:F0} ms  {phase.Name}"));
        }
    }

    return;
}

if (args.Contains("--write-cost"))
{
    // What committing results costs on the consumer thread: one part of 500 rows of 512 floats.
    var random = new Random(1);
    var rows = Enumerable.Range(0, 500).Select(i => new ResultRow { Key = $"img-{i}.png", Ok = true, Outputs = [InferPool.Onnx.Tensors.TensorData.Create(Enumerable.Range(0, 512).Select(_ => random.NextSingle()).ToArray(), 512)], Device = "cpu", Replica = "cpu#0", Attempts = 1 }).ToList();
    foreach (var format in new[] { "parquet", "jsonl" })
    {
        var writer = OutputFormat.Parse(format);
        await writer.WriteAsync(new MemoryStream(), rows, [new OutputColumn("embedding")], CancellationToken.None);
        var t0 = Stopwatch.GetTimestamp();
        await writer.WriteAsync(new MemoryStream(), rows, [new OutputColumn("embedding")], CancellationToken.None);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{format}: {Stopwatch.GetElapsedTime(t0).TotalMilliseconds:F0} ms for 500 rows"));
    }

    return;
}

if (args.Contains("--prepare-cost"))
{
    // Where the end-to-end time goes besides inference, per file on one thread: the codec's decode alone, and the
    // whole preparation (read, decode, orient, resize and crop, normalise), each the median of 15 after a warm-up.
    var tensorPool = new TensorPool(3 * 224 * 224, 4);
    var pooled = new ImagePreprocessor(choice.Normalization, tensors: tensorPool);
    double total = 0, decodeTotal = 0;
    foreach (var file in files)
    {
        var bytes = File.ReadAllBytes(file);
        double Time(Action action)
        {
            action();
            var samples = new double[15];
            for (var k = 0; k < samples.Length; k++)
            {
                var t0 = Stopwatch.GetTimestamp();
                action();
                samples[k] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            }

            return samples.Order().ElementAt(samples.Length / 2);
        }

        var decodeOnly = Time(() => SkiaSharp.SKBitmap.Decode(bytes).Dispose());
        var whole = Time(() => tensorPool.Return(pooled.PrepareFile(file)));
        total += whole;
        decodeTotal += decodeOnly;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{Path.GetFileName(file),-24} decode {decodeOnly,6:F1} ms  whole {whole,6:F1} ms"));
    }

    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"mean over the files: decode {decodeTotal / files.Length:F1} ms, whole preparation {total / files.Length:F1} ms"));

    return;
}

Console.WriteLine($"{items} images ({files.Length} samples x {repeat}), {cores} cores, ResNet-18 on ONNX Runtime CPU, {rounds} rounds");

var batchSize = Arg("--batch", 1);
// --command: also time the built CLI as a user runs it (a new process: runtime start, model check, replica builds);
// --tool PATH: time that inferpool instead (an installed tool package, which ships precompiled code).
var cli = args.Contains("--tool") ? Path.GetFullPath(args[Array.IndexOf(args, "--tool") + 1]) : args.Contains("--command") ? FindCli() : null;
var raw = new List<RawLoop>();
for (var sessions = 1; sessions <= cores; sessions++)
{
    foreach (var threads in new[] { 1, cores }.Distinct())
    {
        foreach (var batch in new[] { 1, batchSize }.Distinct())
        {
            // Batches need the model with its batch dimension made symbolic, as the pool runs it.
            raw.Add(new RawLoop(batch == 1 ? File.ReadAllBytes(choice.Path) : onnx.SessionBytes, sessions, threads, batch, decoded));
        }
    }
}

// The best raw layout is picked by a selection pass of its own (a fifth of the items per layout, twice, alternating):
// picked from the very measurements it is then judged by, the best of several noisy medians reads high on average.
var selectionItems = Math.Max(100, items / 5);
var selection = raw.ToDictionary(loop => loop, _ => new List<double>());
for (var pass = 0; pass < 2; pass++)
{
    foreach (var loop in raw)
    {
        selection[loop].Add(loop.Measure(selectionItems).Rate);
    }
}

var best = selection.MaxBy(kv => kv.Value.Average()).Key;
Console.WriteLine($"Selection pass, {selectionItems} items per layout, mean of 2:");
foreach (var (loop, rates) in selection)
{
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {loop.Name}: {rates.Average():F1} img/s{(loop == best ? " (best)" : "")}"));
    if (loop != best)
    {
        loop.Dispose();
    }
}

// Each round times the best raw loop, the job in process and the command one after another, starting one place later
// each round, so that each round's ratios compare measurements taken within a minute of each other, and a drift of the
// machine's speed falls on every way in turn.
var bestName = $"{best.Name} (the best layout)";
var ways = new List<(string Name, Func<Task<Measurement>> Measure)>
{
    (bestName, () => Task.FromResult(best.Measure(items))),
    ($"inferpool run in process (decode + infer + write parquet), batch {batchSize}", EndToEndAsync),
};
if (cli is not null)
{
    ways.Add(($"inferpool run as a command, process start to exit ({(args.Contains("--tool") ? "the tool at --tool, " : "")}{CommandConfiguration(cli)})", () => WholeCommandAsync(cli)));
}

var results = ways.ToDictionary(w => w.Name, _ => new List<Measurement>());
for (var round = 0; round < rounds; round++)
{
    for (var k = 0; k < ways.Count; k++)
    {
        var (name, measure) = ways[(round + k) % ways.Count];
        results[name].Add(await measure());
    }

    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"round {round + 1}: {string.Join(", ", ways.Select(w => $"{results[w.Name][round].Rate:F1}"))} img/s"));
}

best.Dispose();
var baseline = results[bestName];
var baselineCpu = MedianCpu(baseline);
Console.WriteLine();
Console.WriteLine($"| way | img/s (median of {rounds}) | × best raw (median of the rounds' ratios) | CPU ms per image (median) | best raw's CPU per image ÷ this |");
Console.WriteLine("| --- | ---: | ---: | ---: | ---: |");
var summaries = new List<string>();
foreach (var (name, measurements) in results)
{
    var ratios = measurements.Select((m, r) => m.Rate / baseline[r].Rate).ToList();
    var ratio = Median(ratios);
    var cpu = MedianCpu(measurements);
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | {Median([.. measurements.Select(m => m.Rate)]):F1} | {ratio:F2} | {cpu:F1} | {baselineCpu / cpu:F2} |"));
    if (name != bestName)
    {
        summaries.Add(string.Create(CultureInfo.InvariantCulture, $"{name}: {ratio:P1} of the best raw loop (rounds: {string.Join(", ", ratios.Select(r => r.ToString("F2", CultureInfo.InvariantCulture)))}); by CPU time per image, {baselineCpu / cpu:F2}."));
    }
}

// The median CPU time per image of a way's rounds, or NaN where any of them could not be read.
static double MedianCpu(List<Measurement> measurements) =>
    measurements.All(m => m.CpuMsPerItem is not null) ? Median([.. measurements.Select(m => m.CpuMsPerItem!.Value)]) : double.NaN;

Console.WriteLine();
summaries.ForEach(Console.WriteLine);
Directory.Delete(work, recursive: true);

async Task<Measurement> EndToEndAsync()
{
    var output = Path.Combine(work, "out");
    var options = new JobOptions
    {
        Input = InputSource.Open(list),
        Engine = new OnnxEngine(choice, onnx),
        OutputDirectory = output,
        Plan = ReplicaPlan.Cpu(JobDefaults.CpuReplicas(cores, null)),
        BatchSize = batchSize,
        PrepareWorkers = cores,
        RowsPerPart = 10_000,
        DuplicateKeys = DuplicateKeys.MakeUnique, // the samples are cycled: the same paths come back
        Force = true, // every round is a whole job from the start
    };
    var cpu = CpuTime.Self();
    var started = Stopwatch.GetTimestamp();
    var summary = await new InferenceJob(options, NullLogger.Instance, TimeProvider.System).RunAsync();
    var elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds;
    cpu = CpuTime.Self() - cpu;
    if (summary.Failed != 0 || summary.Items != items)
    {
        throw new InvalidOperationException($"the job did {summary.Items} items with {summary.Failed} failures");
    }

    return new Measurement(items / elapsed, cpu.TotalMilliseconds / items);
}

async Task<Measurement> WholeCommandAsync(string tool)
{
    var start = new ProcessStartInfo(tool, ["run", list, "-o", Path.Combine(work, "out-command"), "--force", "--allow-duplicate-keys", "-q"])
    {
        RedirectStandardOutput = true,
        RedirectStandardError = true,
    };
    var cpu = CpuTime.WaitedChildren();
    var started = Stopwatch.GetTimestamp();
    using var process = Process.Start(start)!;
    var stdout = process.StandardOutput.ReadToEndAsync();
    var stderr = process.StandardError.ReadToEndAsync();
    await process.WaitForExitAsync();
    var elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds;
    cpu = CpuTime.WaitedChildren() - cpu;
    if (process.ExitCode != 0 || !(await stdout).Contains($"{items} ok", StringComparison.Ordinal))
    {
        throw new InvalidOperationException($"inferpool run failed ({process.ExitCode}): {await stdout}{await stderr}");
    }

    return new Measurement(items / elapsed, cpu?.TotalMilliseconds / items);
}

// What the command runs with: a configuration 'inferpool tune' saved beside the built-in model wins over the defaults.
// An installed tool's command is a launcher; its model lies in the tool store under the same folder.
static string CommandConfiguration(string tool)
{
    var folder = Path.GetDirectoryName(tool)!;
    var model = Path.Combine(folder, "models", "resnet18", "ResNet18.onnx");
    var store = Path.Combine(folder, ".store");
    if (!File.Exists(model) && Directory.Exists(store))
    {
        model = Directory.EnumerateFiles(store, "ResNet18.onnx", SearchOption.AllDirectories).FirstOrDefault() ?? model;
    }

    var path = TunedConfig.BesideModel(model);
    if (!File.Exists(path))
    {
        return "CLI defaults";
    }

    var tuned = TunedConfig.Load(path);
    return string.Create(CultureInfo.InvariantCulture, $"tuned: {tuned.Devices}, {tuned.Threads} thread(s), batch {tuned.Batch}");
}

static string FindCli()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
    {
        var tool = Path.Combine(dir.FullName, "src", "InferPool.Cli", "bin", "Release", "net10.0", "inferpool");
        if (File.Exists(tool))
        {
            return tool;
        }
    }

    throw new InvalidOperationException("--command needs the CLI built first: dotnet build src/InferPool.Cli -c Release");
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToArray();
    return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
}

int Arg(string name, int fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
}
