using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Google.Protobuf;
using Onnx;

namespace InferPool.Bench;

/// <summary>
/// Peak resident memory of a whole <c>inferpool run</c> for 10,000 and 100,000 inputs (and 1,000,000 with --large; synthetic tensors in a
/// JSONL file, a small real ONNX model), each in its own process, so growth with the input size shows.
/// </summary>
internal static partial class MemoryBench
{
    private const int Width = 256;

    public static async Task RunAsync(string work, IReadOnlyList<int> sizes)
    {
        var model = WriteModel(work);
        var peaks = new List<(int Items, double PeakMb, double Seconds)>();
        foreach (var items in sizes)
        {
            var inputs = Path.Combine(work, $"inputs-{items}.jsonl");
            WriteInputs(inputs, items);
            var started = Stopwatch.GetTimestamp();
            var output = await RunToolAsync(work, "run", inputs, "--model", model, "-o", Path.Combine(work, $"out-{items}"), "--format", "parquet", "-q");
            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            var peak = PeakPattern().Match(output);
            if (!peak.Success)
            {
                throw new InvalidOperationException($"no peak memory line in the tool's output:\n{output}");
            }

            peaks.Add((items, double.Parse(peak.Groups[1].Value, CultureInfo.InvariantCulture), seconds));
            if (items > 100_000)
            {
                // A million 256-float records are 2.5 GB of JSONL, and their results 1 GB of Parquet.
                File.Delete(inputs);
                Directory.Delete(Path.Combine(work, $"out-{items}"), recursive: true);
            }
        }

        Console.WriteLine("| inputs | peak resident memory | wall time |");
        Console.WriteLine("| ---: | ---: | ---: |");
        foreach (var (items, mb, seconds) in peaks)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {items:N0} | {mb:F0} MB | {seconds:F1} s |"));
        }

        for (var i = 1; i < peaks.Count; i++)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"growth from {peaks[i - 1].Items:N0} to {peaks[i].Items:N0} inputs: {(peaks[i].PeakMb / peaks[i - 1].PeakMb) - 1:P1}"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"growth from {peaks[0].Items:N0} to {peaks[^1].Items:N0} inputs: {(peaks[^1].PeakMb / peaks[0].PeakMb) - 1:P1} (target: under 10%)"));
    }

    /// <summary>
    /// The same for the text job: 10,000 and 1,000,000 texts (the sample texts cycled) through the whole text pipeline
    /// (tokenization, length-sorted windows, padding, pooling, parts) with a tiny BERT-shaped model (an embedding lookup
    /// of the real vocabulary), so that the pipeline, not the model, is what is measured.
    /// </summary>
    public static async Task RunTextAsync(string work, IReadOnlyList<int> sizes)
    {
        var model = WriteTextModel(work);
        File.Copy(Path.Combine(AppContext.BaseDirectory, "models", "minilm", "vocab.txt"), Path.Combine(work, "vocab.txt"), overwrite: true);
        var texts = File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "samples", "texts", "dotnet-docs.txt"));
        var peaks = new List<(int Items, double PeakMb, double Seconds)>();
        foreach (var items in sizes)
        {
            var inputs = Path.Combine(work, $"texts-{items}.txt");
            await using (var writer = new StreamWriter(inputs, false, new UTF8Encoding(false), 1 << 20))
            {
                for (var i = 0; i < items; i++)
                {
                    await writer.WriteLineAsync(texts[i % texts.Length]);
                }
            }

            var started = Stopwatch.GetTimestamp();
            var output = await RunToolAsync(work, "run", inputs, "--model", model, "--tokenizer", Path.Combine(work, "vocab.txt"), "-o", Path.Combine(work, $"text-out-{items}"), "--part-rows", "20000", "-q");
            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            var peak = PeakPattern().Match(output);
            peaks.Add((items, peak.Success ? double.Parse(peak.Groups[1].Value, CultureInfo.InvariantCulture) : throw new InvalidOperationException($"no peak memory line:\n{output}"), seconds));
            File.Delete(inputs);
            Directory.Delete(Path.Combine(work, $"text-out-{items}"), recursive: true);
        }

        Console.WriteLine("| texts | peak resident memory | wall time |");
        Console.WriteLine("| ---: | ---: | ---: |");
        foreach (var (items, mb, seconds) in peaks)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {items:N0} | {mb:F0} MB | {seconds:F1} s |"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"growth from {peaks[0].Items:N0} to {peaks[^1].Items:N0} texts: {(peaks[^1].PeakMb / peaks[0].PeakMb) - 1:P1}"));
    }

    /// <summary>last_hidden_state = E[input_ids] over [batch, sequence] → [batch, sequence, 32]: BERT's interface, almost none of its cost.</summary>
    private static string WriteTextModel(string work)
    {
        const int vocabulary = 30522;
        const int hidden = 32;
        var random = new Random(11);
        var table = new TensorProto { Name = "E", DataType = 1, Dims = { vocabulary, hidden } };
        table.FloatData.AddRange(Enumerable.Range(0, vocabulary * hidden).Select(_ => random.NextSingle() - 0.5f));
        var graph = new GraphProto { Name = "tiny-bert" };
        graph.Input.Add(Sequence("input_ids", 7, "batch", "sequence"));
        graph.Input.Add(Sequence("attention_mask", 7, "batch", "sequence"));
        graph.Output.Add(Sequence("last_hidden_state", 1, "batch", "sequence", hidden));
        graph.Initializer.Add(table);
        graph.Node.Add(new NodeProto { OpType = "Gather", Input = { "E", "input_ids" }, Output = { "last_hidden_state" } });
        var model = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 13 } } };
        var path = Path.Combine(work, "tiny-bert.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return path;

        static ValueInfoProto Sequence(string name, int type, params object[] dims) => new()
        {
            Name = name,
            Type = new TypeProto
            {
                TensorType = new TypeProto.Types.Tensor
                {
                    ElemType = type,
                    Shape = new TensorShapeProto { Dim = { dims.Select(d => d is string symbol ? new TensorShapeProto.Types.Dimension { DimParam = symbol } : new TensorShapeProto.Types.Dimension { DimValue = (int)d }) } },
                },
            },
        };
    }

    private static async Task<string> RunToolAsync(string work, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = work, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "InferPool.Cli.dll"));
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return process.ExitCode == 0 ? await stdout : throw new InvalidOperationException($"inferpool exited {process.ExitCode}: {await stderr}");
    }

    private static void WriteInputs(string path, int items)
    {
        var random = new Random(items);
        using var writer = new StreamWriter(path, false, new UTF8Encoding(false), 1 << 20);
        var line = new StringBuilder();
        for (var i = 0; i < items; i++)
        {
            line.Clear().Append(CultureInfo.InvariantCulture, $"{{\"key\":\"item-{i:D6}\",\"input\":[");
            for (var j = 0; j < Width; j++)
            {
                line.Append(j == 0 ? "" : ",").Append(((random.NextSingle() * 2) - 1).ToString("G6", CultureInfo.InvariantCulture));
            }

            writer.WriteLine(line.Append("]}"));
        }
    }

    /// <summary>y = tanh(x·W) over [N, 256]: a small real model, so the pool, parts and journal do the work.</summary>
    private static string WriteModel(string work)
    {
        var random = new Random(7);
        var weights = new TensorProto { Name = "w", DataType = 1, Dims = { Width, Width } };
        weights.FloatData.AddRange(Enumerable.Range(0, Width * Width).Select(_ => (random.NextSingle() - 0.5f) / 8));
        var graph = new GraphProto { Name = "memory-bench" };
        graph.Input.Add(Value("x"));
        graph.Output.Add(Value("y"));
        graph.Initializer.Add(weights);
        graph.Node.Add(new NodeProto { OpType = "MatMul", Input = { "x", "w" }, Output = { "xw" } });
        graph.Node.Add(new NodeProto { OpType = "Tanh", Input = { "xw" }, Output = { "y" } });
        var model = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 13 } } };
        var path = Path.Combine(work, "tanh-256.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return path;

        static ValueInfoProto Value(string name) => new()
        {
            Name = name,
            Type = new TypeProto
            {
                TensorType = new TypeProto.Types.Tensor
                {
                    ElemType = 1,
                    Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "N" }, new TensorShapeProto.Types.Dimension { DimValue = Width } } },
                },
            },
        };
    }

    [GeneratedRegex(@"Peak resident memory of the process: (\d+) MB")]
    private static partial Regex PeakPattern();
}
