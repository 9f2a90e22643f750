using System.Text.Json;

namespace InferPool.Cli.Tests;

public sealed class CommandLineTests : TempFolderTest
{
    [Fact]
    public async Task Run_NoArguments_EmbedsTheSampleImagesAndSaysWhere()
    {
        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run");

        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("Done: 20 items, 20 ok, 0 failed", stdout, StringComparison.Ordinal);
        Assert.Contains(Path.Combine(Dir, "inferpool-out"), stdout, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(Dir, "inferpool-out", "part-00000.parquet")));

        var again = await Cli.RunAsync(Dir, "run");
        Assert.Equal(0, again.ExitCode);
        Assert.Contains("Nothing to do: the job in", again.Out, StringComparison.Ordinal);
        Assert.Contains("is already complete (20 item(s)). Use --force to run it again.", again.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_SomeBadImages_ExitsOneListsReasonsAndKeepsTheGoodOnes()
    {
        var images = Path.Combine(Dir, "in");
        Directory.CreateDirectory(images);
        File.Copy(Path.Combine(Cli.SampleImages, "coffee.png"), Path.Combine(images, "coffee.png"));
        Write("in/empty.jpg", []);
        Write("in/notes.jpg", "this is text, not a JPEG");
        var truncated = File.ReadAllBytes(Path.Combine(Cli.SampleImages, "rocket.jpg"));
        Write("in/truncated.jpg", truncated[..(truncated.Length / 3)]);

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "in", "-o", "out", "--format", "jsonl");

        Assert.True(code == 1, stderr + stdout);
        Assert.Contains("4 items, 1 ok, 3 failed", stdout, StringComparison.Ordinal);
        Assert.Contains("empty.jpg: InvalidDataException: The file is empty (0 bytes).", stdout, StringComparison.Ordinal);
        Assert.Contains("notes.jpg: InvalidDataException: Not a decodable image", stdout, StringComparison.Ordinal);
        Assert.Contains("truncated.jpg: InvalidDataException", stdout, StringComparison.Ordinal);
        var rows = File.ReadAllLines(Path.Combine(Dir, "out", "part-00000.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["coffee.png", "empty.jpg", "notes.jpg", "truncated.jpg"], rows.Select(r => r.GetProperty("key").GetString()));
        Assert.Equal(["ok", "failed", "failed", "failed"], rows.Select(r => r.GetProperty("status").GetString()));
        Assert.Equal(512, rows[0].GetProperty("embedding").GetArrayLength());
        Assert.Equal(JsonValueKind.Null, rows[1].GetProperty("embedding").ValueKind);
    }

    [Theory]
    [InlineData("The input 'missing-folder' does not exist", "run", "missing-folder")]
    [InlineData("'cuda:99' asks for cuda:99, but this machine has", "run", "--devices", "cuda:99")]
    [InlineData("--batch is 0; it must be at least 1", "run", "--batch", "0")]
    [InlineData("--format 'csv' is not supported", "run", "--format", "csv")]
    [InlineData("is neither 'resnet18' nor an existing .onnx file", "run", "--model", "nope.onnx")]
    [InlineData("Unknown option 'bogus'", "run", "--bogus")]
    [InlineData("--resume and --force contradict each other", "run", "--resume", "--force")]
    public async Task Run_JobCannotRun_ExitsTwoWithOneLineAndNoStackTrace(string expected, params string[] args)
    {
        var (code, stdout, stderr) = await Cli.RunAsync(Dir, args);

        Assert.True(code == 2, $"exit {code}: {stderr}{stdout}");
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr + stdout, StringComparison.Ordinal);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task Run_CorruptModel_ExitsTwoNamingTheFile()
    {
        Write("broken.onnx", "not a model at all");

        var (code, _, stderr) = await Cli.RunAsync(Dir, "run", "--model", "broken.onnx");

        Assert.Equal(2, code);
        Assert.Contains("broken.onnx' is not a model ONNX Runtime can load", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Devices_ListsCoresAndEachGpuOrSaysThereIsNone()
    {
        var (code, stdout, _) = await Cli.RunAsync(Dir, "devices");

        Assert.Equal(0, code);
        Assert.Contains($"{Environment.ProcessorCount} cores", stdout, StringComparison.Ordinal);
        Assert.Contains("CPUExecutionProvider", stdout, StringComparison.Ordinal);
        var gpus = InferPool.Devices.NvmlDeviceInventory.Discover().Gpus;
        if (gpus.Count == 0)
        {
            Assert.Contains("no NVIDIA GPU found", stdout, StringComparison.Ordinal);
        }
        else
        {
            Assert.All(gpus, gpu => Assert.Contains(gpu.ToString(), stdout, StringComparison.Ordinal));
        }
    }
}
