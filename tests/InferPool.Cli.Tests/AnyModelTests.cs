using System.Text.Json;
using InferPool.Onnx.Tensors;
using Microsoft.ML.OnnxRuntime;
using Parquet;

namespace InferPool.Cli.Tests;

/// <summary>`inferpool run` on models with several inputs and outputs of other types, from JSONL records of named tensors.</summary>
public sealed class AnyModelTests : TempFolderTest
{
    private const string MixedRecords = """
        {"key": "a", "inputs": {"x": [1.5, 2, 3], "n": [1, 2, 3]}}
        {"key": "b", "inputs": {"x": [[1, 2, 3], [-4, 5, 6]], "n": [[1, 1, 1], [2, 2, 2]]}}
        {"key": "c", "inputs": {"x": [1, 2, 3], "n": [1.5, 2, 3]}}
        {"key": "d", "inputs": {"x": [1, 2], "n": [1, 2]}}
        {"key": "e", "inputs": {"x": [1, 2, 3]}}
        {"key": "f", "inputs": {"x": [-1, 0, 1], "n": [9007199254740993, 0, -7]}}
        {"key": "g", "inputs": {"x": [1, "two", 3], "n": [1, 2, 3]}}
        {"key": "h", "inputs": {"x": [[1, 2, 3], [4, 5]], "n": [[1, 1, 1], [2, 2, 2]]}}
        """;

    [Fact]
    public async Task Run_TwoInputModelFromJsonl_EqualsOnnxRuntimeAndFailsBadRecordsAlone()
    {
        var model = Onnx.Tests.TinyModels.Mixed(Dir);
        Write("in.jsonl", MixedRecords);

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "-o", "out", "--format", "jsonl", "--batch", "4");

        Assert.True(code == 1, stdout + stderr);
        var rows = ReadJsonl(Path.Combine(Dir, "out"));
        Assert.Equal(8, rows.Count);
        using var session = new InferenceSession(model);
        foreach (var key in new[] { "a", "b", "f" })
        {
            var record = JsonDocument.Parse(MixedRecords.Split('\n').Single(l => l.Contains($"\"{key}\"", StringComparison.Ordinal))).RootElement.GetProperty("inputs");
            var whole = record.GetProperty("x")[0].ValueKind == JsonValueKind.Array;
            var x = Flatten(record.GetProperty("x")).Select(e => e.GetSingle()).ToArray();
            var n = Flatten(record.GetProperty("n")).Select(e => e.GetInt64()).ToArray();
            using var xv = OrtValue.CreateTensorValueFromMemory(x, [x.Length / 3, 3]);
            using var nv = OrtValue.CreateTensorValueFromMemory(n, [n.Length / 3, 3]);
            using var outputs = session.Run(new RunOptions(), ["x", "n"], [xv, nv], ["sum", "twice", "positive"]);
            var row = rows[key];
            Assert.Equal("ok", row.GetProperty("status").GetString());
            Assert.Equal(outputs[0].GetTensorDataAsSpan<float>().ToArray(), Flatten(row.GetProperty("sum")).Select(e => e.GetSingle()));
            Assert.Equal(outputs[1].GetTensorDataAsSpan<long>().ToArray(), Flatten(row.GetProperty("twice")).Select(e => e.GetInt64()));
            Assert.Equal(outputs[2].GetTensorDataAsSpan<bool>().ToArray(), Flatten(row.GetProperty("positive")).Select(e => e.GetBoolean()));

            // A whole input keeps its batch dimension in the output; one item has none.
            Assert.Equal(whole ? JsonValueKind.Array : JsonValueKind.Number, row.GetProperty("sum")[0].ValueKind);
        }

        Assert.Equal(18014398509481986, rows["f"].GetProperty("twice")[0].GetInt64());
        Assert.Contains("Input n holds 1.5, which is not a valid int64 value", Error(rows["c"]), StringComparison.Ordinal);
        Assert.Contains("model input x Float [N,3] fixes dimension 1 at 3", Error(rows["d"]), StringComparison.Ordinal);
        Assert.Contains("no tensor for input n", Error(rows["e"]), StringComparison.Ordinal);
        Assert.Contains("Input x holds the string \"two\"", Error(rows["g"]), StringComparison.Ordinal);
        Assert.Contains("Input x is ragged", Error(rows["h"]), StringComparison.Ordinal);
        Assert.Contains("twice (int64)", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_DoubleFloat16Uint8Int32AndBoolInputs_EqualOnnxRuntime()
    {
        var model = Onnx.Tests.TinyModels.Typed(Dir);
        Write("in.jsonl", """
            {"key": "a", "inputs": {"d": [0.1, -1e-300], "h": [0.5, -1.5], "u": [3, 255], "i": [7, -1073741824], "b": [true, false]}}
            {"key": "b", "inputs": {"d": [2.5, 3], "h": [65504, 0.099975586], "u": [0, 1], "i": [0, 1], "b": [0, 1]}}
            {"key": "c", "inputs": {"d": [1, 2], "h": [1, 2], "u": [256, 1], "i": [0, 1], "b": [true, true]}}
            """);

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "-o", "out", "--format", "jsonl", "--batch", "4");

        Assert.True(code == 1, stdout + stderr);
        var rows = ReadJsonl(Path.Combine(Dir, "out"));
        using var session = new InferenceSession(model);
        foreach (var key in new[] { "a", "b" })
        {
            var inputs = JsonDocument.Parse(File.ReadAllLines(Path.Combine(Dir, "in.jsonl")).Single(l => l.Contains($"\"key\": \"{key}\"", StringComparison.Ordinal))).RootElement.GetProperty("inputs");
            using var d = OrtValue.CreateTensorValueFromMemory(inputs.GetProperty("d").EnumerateArray().Select(e => e.GetDouble()).ToArray(), [1, 2]);
            using var h = OrtValue.CreateTensorValueFromMemory(inputs.GetProperty("h").EnumerateArray().Select(e => (Float16)e.GetSingle()).ToArray(), [1, 2]);
            using var u = OrtValue.CreateTensorValueFromMemory(inputs.GetProperty("u").EnumerateArray().Select(e => e.GetByte()).ToArray(), [1, 2]);
            using var i = OrtValue.CreateTensorValueFromMemory(inputs.GetProperty("i").EnumerateArray().Select(e => e.GetInt32()).ToArray(), [1, 2]);
            using var b = OrtValue.CreateTensorValueFromMemory(inputs.GetProperty("b").EnumerateArray().Select(e => e.ValueKind == JsonValueKind.True || (e.ValueKind == JsonValueKind.Number && e.GetInt32() == 1)).ToArray(), [1, 2]);
            using var outputs = session.Run(new RunOptions(), ["d", "h", "u", "i", "b"], [d, h, u, i, b], ["d2", "h2", "u2", "i2", "nb"]);
            var row = rows[key];
            Assert.Equal(outputs[0].GetTensorDataAsSpan<double>().ToArray(), row.GetProperty("d2").EnumerateArray().Select(e => e.GetDouble()));
            Assert.Equal(outputs[1].GetTensorDataAsSpan<Float16>().ToArray().Select(v => (float)v), row.GetProperty("h2").EnumerateArray().Select(e => e.GetSingle()));
            Assert.Equal(outputs[2].GetTensorDataAsSpan<byte>().ToArray(), row.GetProperty("u2").EnumerateArray().Select(e => e.GetByte()));
            Assert.Equal(outputs[3].GetTensorDataAsSpan<int>().ToArray(), row.GetProperty("i2").EnumerateArray().Select(e => e.GetInt32()));
            Assert.Equal(outputs[4].GetTensorDataAsSpan<bool>().ToArray(), row.GetProperty("nb").EnumerateArray().Select(e => e.GetBoolean()));
        }

        Assert.Contains("Input u holds 256, which is not a valid uint8 value", Error(rows["c"]), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_TypedOutputsToParquet_StoreTypedListsAndTheirShapes()
    {
        var model = Onnx.Tests.TinyModels.Mixed(Dir);
        Write("in.jsonl", MixedRecords);

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "-o", "out", "-q");

        Assert.True(code == 1, stdout + stderr);
        var part = Directory.GetFiles(Path.Combine(Dir, "out"), "part-*.parquet").Single();
        await using var stream = File.OpenRead(part);
        await using var reader = await ParquetReader.CreateAsync(stream);
        Assert.Equal("[3]", reader.CustomMetadata["inferpool.shape.sum"]);
        Assert.Equal("[3]", reader.CustomMetadata["inferpool.shape.twice"]);
        var rows = await PartFiles.ReadParquetAsync(Path.Combine(Dir, "out"));
        Assert.Equal([2L, 4, 6], ((System.Collections.IEnumerable)rows["a"]["twice"]).Cast<long>());
        Assert.Equal([true, true, true, false, true, true], ((System.Collections.IEnumerable)rows["b"]["positive"]).Cast<bool>());
        Assert.Empty((System.Collections.IEnumerable)rows["c"]["twice"] is System.Collections.IEnumerable e ? e.Cast<object>() : []);
    }

    [Fact]
    public async Task Run_ItemsOfDifferentLengthsWithPad_ShareCallsAndKeepTheirOwnShapes()
    {
        var model = Onnx.Tests.TinyModels.Sequence(Dir);
        var random = new Random(3);
        var lines = Enumerable.Range(0, 30).Select(i =>
        {
            var ids = Enumerable.Range(0, 1 + random.Next(12)).Select(_ => random.Next(1, 1000)).ToArray();
            return JsonSerializer.Serialize(new { key = $"t{i}", inputs = new { ids, mask = ids.Select(_ => 1) } });
        }).ToArray();
        Write("in.jsonl", string.Join('\n', lines));

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "-o", "out", "--batch", "16", "--pad", "ids=0", "--pad", "mask=0", "--max-batch-tokens", "40", "-q");

        Assert.True(code == 0, stdout + stderr);
        var rows = await PartFiles.ReadParquetAsync(Path.Combine(Dir, "out"));
        await using (var stream = File.OpenRead(Directory.GetFiles(Path.Combine(Dir, "out"), "part-*.parquet").Single()))
        {
            await using var reader = await ParquetReader.CreateAsync(stream);
            Assert.Equal("[?]", reader.CustomMetadata["inferpool.shape.tokens"]);
            Assert.Equal("[]", reader.CustomMetadata["inferpool.shape.total"]);
        }

        foreach (var line in lines)
        {
            var record = JsonDocument.Parse(line).RootElement;
            var ids = record.GetProperty("inputs").GetProperty("ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var row = rows[record.GetProperty("key").GetString()!];
            Assert.Equal(ids.Select(v => (float)v), ((System.Collections.IEnumerable)row["tokens"]).Cast<float>());
            Assert.Equal([(long)ids.Length], ((System.Collections.IEnumerable)row["tokens_shape"]).Cast<long>());
            Assert.Equal([ids.Sum()], ((System.Collections.IEnumerable)row["total"]).Cast<long>());
        }
    }

    [Fact]
    public async Task Run_PadForAnInputTheModelLacks_ExitsTwoNamingIt()
    {
        var model = Onnx.Tests.TinyModels.Sequence(Dir);
        Write("in.jsonl", "{\"inputs\": {\"ids\": [1], \"mask\": [1]}}\n");

        var (code, _, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "--pad", "input_ids=0", "-q");

        Assert.Equal(2, code);
        Assert.Contains("--pad input_ids=0: the model has no input 'input_ids'; its inputs are ids, mask.", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_ModelWithAStringInput_ExitsTwoNamingTheInput()
    {
        var model = Onnx.Tests.TinyModels.StringInput(Dir);
        Write("in.jsonl", "{\"input\": [\"a\"]}\n");

        var (code, _, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "-q");

        Assert.Equal(2, code);
        Assert.Contains("input 'text' has element type String", stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    [Fact]
    public async Task Run_TextModelFromTheCommandLine_WritesEmbeddingsAndCountsCutTexts()
    {
        Write("texts.txt", "A man is eating food.\n" + string.Concat(Enumerable.Repeat("many words here ", 400)) + "\n\n");

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "texts.txt", "--model", "minilm", "--pooling", "cls", "-o", "out", "--format", "jsonl");

        Assert.True(code == 1, stdout + stderr);
        Assert.Contains("1 item(s) were longer than the model takes and were cut to fit", stdout, StringComparison.Ordinal);
        Assert.Contains("cls pooling, up to 256 tokens per text", stdout, StringComparison.Ordinal);
        var rows = ReadJsonl(Path.Combine(Dir, "out"));
        Assert.Equal(384, rows["1"].GetProperty("embedding").GetArrayLength());
        Assert.True(rows["2"].GetProperty("truncated").GetBoolean());
        Assert.Contains("The text is empty.", Error(rows["3"]), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_CsvTable_ReadsColumnsIntoTheInputAndFailsBadRowsAlone()
    {
        var model = Onnx.Tests.TinyModels.Affine(Dir, symbolicBatch: true);
        Write("table.csv", "id,a,b,c,d,note\nr1,1,2,3,4,x\nr2,0.5,-1,0,2,\"quoted, with comma\"\nr3,1,2\nr4,1,two,3,4,y\n");

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "table.csv", "--model", model, "--key", "id", "--column", "x=a,b,c,d", "-o", "out", "--format", "jsonl");

        Assert.True(code == 1, stdout + stderr);
        var rows = ReadJsonl(Path.Combine(Dir, "out"));
        Assert.Equal([3f, 5, 7, 9], rows["r1"].GetProperty("y").EnumerateArray().Select(e => e.GetSingle()));
        Assert.Equal([2f, -1, 1, 5], rows["r2"].GetProperty("y").EnumerateArray().Select(e => e.GetSingle()));
        Assert.Contains("Row 3 of table.csv (line 4) has 3 field(s); the header has 6.", Error(rows["r3"]), StringComparison.Ordinal);
        Assert.Contains("Input x holds the string \"two\"", Error(rows["r4"]), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_TableWithoutAColumnTheJobNeeds_ExitsTwoNamingTheColumnAndTheFile()
    {
        var model = Onnx.Tests.TinyModels.Affine(Dir, symbolicBatch: true);
        Write("table.csv", "id,a,b,c,d\nr1,1,2,3,4\n");

        var missing = await Cli.RunAsync(Dir, "run", "table.csv", "--model", model, "--column", "x=a,b,c,e", "-q");
        var key = await Cli.RunAsync(Dir, "run", "table.csv", "--model", model, "--key", "name", "-q");

        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("Column 'e' is not in table.csv; its columns are id, a, b, c, d.", missing.Err, StringComparison.Ordinal);
        Assert.Equal(2, key.ExitCode);
        Assert.Contains("Column 'name' is not in table.csv", key.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_ParquetTable_StreamsRowGroupsAndMapsInputsByName()
    {
        var model = Onnx.Tests.TinyModels.Mixed(Dir);
        var rows = Enumerable.Range(0, 25).Select(i => new TableRow { Id = $"k{i}", X = [i, -i, 0.5f], N = [i, 2L * i, 3] }).ToList();
        await using (var stream = File.Create(Path.Combine(Dir, "table.parquet")))
        {
            await Parquet.Serialization.ParquetSerializer.SerializeAsync(rows, stream, new Parquet.ParquetOptions { RowGroupSize = 10 });
        }

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "table.parquet", "--model", model, "--key", "id", "--batch", "4", "-o", "out", "--format", "jsonl", "-q");

        Assert.True(code == 0, stdout + stderr);
        var output = ReadJsonl(Path.Combine(Dir, "out"));
        Assert.Equal(25, output.Count);
        foreach (var row in rows)
        {
            Assert.Equal(row.X.Zip(row.N, (x, n) => x + n), output[row.Id].GetProperty("sum").EnumerateArray().Select(e => e.GetSingle()));
            Assert.Equal(row.N.Select(n => 2 * n), output[row.Id].GetProperty("twice").EnumerateArray().Select(e => e.GetInt64()));
        }
    }

    [Fact]
    public async Task Run_TextModelOnACsvColumn_EmbedsEachRowKeyedByItsColumn()
    {
        Write("texts.csv", "id,body\na,A man is eating food.\nb,\"The cat sat on the mat, quietly.\"\nc,\n");

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "texts.csv", "--model", "minilm", "--column", "body", "--key", "id", "-o", "out", "--format", "jsonl", "-q");

        Assert.True(code == 1, stdout + stderr);
        var rows = ReadJsonl(Path.Combine(Dir, "out"));
        Assert.Equal(384, rows["a"].GetProperty("embedding").GetArrayLength());
        Assert.Equal(384, rows["b"].GetProperty("embedding").GetArrayLength());
        Assert.Contains("has no text in column 'body'", Error(rows["c"]), StringComparison.Ordinal);
    }

    /// <summary>A row of the Parquet table test: its key and one item of each input.</summary>
    public sealed class TableRow
    {
        [System.Text.Json.Serialization.JsonPropertyName("id")]
        public string Id { get; set; } = "";

        [System.Text.Json.Serialization.JsonPropertyName("x")]
        public float[] X { get; set; } = [];

        [System.Text.Json.Serialization.JsonPropertyName("n")]
        public long[] N { get; set; } = [];
    }

    private static Dictionary<string, JsonElement> ReadJsonl(string output) =>
        Directory.GetFiles(output, "part-*.jsonl").SelectMany(File.ReadAllLines)
            .Select(l => JsonDocument.Parse(l).RootElement)
            .ToDictionary(r => r.GetProperty("key").GetString()!, StringComparer.Ordinal);

    private static string Error(JsonElement row) => row.GetProperty("error").GetString() ?? "";

    private static IEnumerable<JsonElement> Flatten(JsonElement value) =>
        value.ValueKind == JsonValueKind.Array ? value.EnumerateArray().SelectMany(Flatten) : [value];
}
