using System.Text.Json;
using InferPool.Jobs.Parts;

namespace InferPool.Cli.Tests;

/// <summary>Keys must be unique for "every key exactly once" to hold: a repeated key is refused, failed, or made unique.</summary>
public sealed class DuplicateKeyTests : TempFolderTest
{
    [Fact]
    public async Task Run_ListFileWithARepeatedLine_ExitsTwoNamingTheKeyAndBothLinesBeforeAnyWork()
    {
        File.Copy(Path.Combine(Cli.SampleImages, "coffee.png"), Path.Combine(Dir, "coffee.png"));
        File.Copy(Path.Combine(Cli.SampleImages, "rocket.jpg"), Path.Combine(Dir, "rocket.jpg"));
        Write("list.txt", "coffee.png\nrocket.jpg\n# a comment\ncoffee.png\n");

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "list.txt", "-o", "out", "-q");

        Assert.True(code == 2, stdout + stderr);
        Assert.Contains("The key 'coffee.png' occurs twice: at line 1 of list.txt and at line 4.", stderr, StringComparison.Ordinal);
        Assert.Contains("--allow-duplicate-keys", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(Dir, "out")) && Directory.EnumerateFiles(Path.Combine(Dir, "out"), "part-*").Any());
    }

    [Fact]
    public async Task Run_JsonlWithARepeatedKey_FailsTheLaterItemUnderAUniqueKeyAndResumesExactlyOnce()
    {
        WriteRecords();

        string[] run = ["run", "in.jsonl", "--model", "affine.onnx", "-o", "out", "--format", "jsonl", "--part-rows", "1", "-q"];
        var (code, stdout, stderr) = await Cli.RunAsync(Dir, run);

        Assert.True(code == 1, stdout + stderr);
        var rows = Rows();
        Assert.Equal(["a", "a#2", "a#3", "b"], rows.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("ok", rows["a"].Status);
        Assert.Equal("ok", rows["b"].Status);
        Assert.Equal("failed", rows["a#3"].Status);
        Assert.Contains("Duplicate key: an earlier item already has the key 'a'", rows["a#2"].Error, StringComparison.Ordinal);

        // As if the run had crashed before its last two parts: the resumed run renames the same way, and the output
        // ends with each key once.
        var output = Path.Combine(Dir, "out");
        var journal = JobJournal.Load(output)!;
        foreach (var part in journal.Parts[^2..])
        {
            File.Delete(Path.Combine(output, part.Name));
        }

        journal.Parts.RemoveRange(journal.Parts.Count - 2, 2);
        journal.Finished = false;
        await journal.SaveAsync(output);
        var resumed = await Cli.RunAsync(Dir, run);
        Assert.True(resumed.ExitCode == 1, resumed.Out + resumed.Err);
        Assert.Equal(rows, Rows());
    }

    [Fact]
    public async Task Run_AllowDuplicateKeys_RunsEveryItemUnderKeysMadeUnique()
    {
        WriteRecords();

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", "affine.onnx", "-o", "out", "--format", "jsonl", "-q", "--allow-duplicate-keys");

        Assert.True(code == 0, stdout + stderr);
        var rows = Rows();
        Assert.Equal(["a", "a#2", "a#3", "b"], rows.Keys.Order(StringComparer.Ordinal));
        Assert.All(rows.Values, r => Assert.Equal("ok", r.Status));
    }

    /// <summary>Four records for the tiny affine model, three of them keyed 'a'.</summary>
    private void WriteRecords()
    {
        Onnx.Tests.TinyModels.Affine(Dir, symbolicBatch: true);
        Write("in.jsonl", "{\"key\": \"a\", \"input\": [1, 2, 3, 4]}\n{\"key\": \"a\", \"input\": [5, 6, 7, 8]}\n{\"key\": \"b\", \"input\": [0, 0, 0, 0]}\n{\"key\": \"a\", \"input\": [1, 1, 1, 1]}\n");
    }

    private Dictionary<string, (string? Status, string? Error)> Rows() =>
        Directory.GetFiles(Path.Combine(Dir, "out"), "part-*.jsonl")
            .SelectMany(File.ReadLines)
            .Select(l => JsonDocument.Parse(l).RootElement)
            .ToDictionary(r => r.GetProperty("key").GetString()!, r => (r.GetProperty("status").GetString(), r.GetProperty("error").GetString()));
}
