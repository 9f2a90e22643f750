using System.Text.Json;
using InferPool.Cli.Progress;
using InferPool.Diagnostics;
using Microsoft.Extensions.Time.Testing;
using Spectre.Console;

namespace InferPool.Cli.Tests;

/// <summary>What README promises about options that had no test: --replicas, --resume, -v, the worker environment, the plain progress line.</summary>
public sealed class PromisesTests : TempFolderTest
{
    private static readonly string FileWorker = $"python3 {Path.Combine(Cli.ToolDirectory, "workers", "file_worker.py")}";

    private string TinyJob()
    {
        var model = Onnx.Tests.TinyModels.Affine(Dir, symbolicBatch: true);
        Write("in.jsonl", string.Join('\n', Enumerable.Range(0, 6).Select(i => $$"""{"key": "k{{i}}", "input": [{{i}}, 1, 2, 3]}""")));
        return model;
    }

    [Fact]
    public async Task Replicas_SetsTheCpuReplicasAndACountInTheDevicesWinsOverIt()
    {
        var model = TinyJob();

        var one = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "--replicas", "1", "-o", "one", "--format", "jsonl");
        var counted = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "--devices", "cpu=2", "--replicas", "1", "-o", "two", "--format", "jsonl");

        Assert.True(one.ExitCode == 0, one.Out + one.Err);
        Assert.Contains(" on cpu (batch", one.Out, StringComparison.Ordinal);
        Assert.Contains("1 replica(s)", one.Out, StringComparison.Ordinal);
        Assert.True(counted.ExitCode == 0, counted.Out + counted.Err);
        Assert.Contains(" on cpu=2 (batch", counted.Out, StringComparison.Ordinal);
        Assert.Contains("2 replica(s)", counted.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Resume_InsistsOnAJobToResume()
    {
        var model = TinyJob();

        var nothing = await Cli.RunAsync(Dir, "run", "in.jsonl", "--model", model, "-o", "fresh", "--resume", "-q");

        Assert.Equal(2, nothing.ExitCode);
        Assert.Contains("--resume: The output folder fresh holds no job to resume.", nothing.Err, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(Dir, "fresh")) && Directory.EnumerateFiles(Path.Combine(Dir, "fresh"), "part-*").Any());
    }

    [Fact]
    public async Task Worker_GetsItsThreadsAndCudaOrderInItsEnvironment_AndVerboseForwardsItsStderr()
    {
        Write("a.bin", "x");
        Write("in.jsonl", """
            {"key": "env", "path": "a.bin", "want": "env"}
            {"key": "note", "path": "a.bin", "want": "stderr"}
            """);

        var verbose = await Cli.RunAsync(Dir, "run", "in.jsonl", "--worker", FileWorker, "--worker-output", "json", "--devices", "cpu=1", "--threads", "3", "-o", "v", "--format", "jsonl", "-v");
        var quiet = await Cli.RunAsync(Dir, "run", "in.jsonl", "--worker", FileWorker, "--worker-output", "json", "--devices", "cpu=1", "-o", "q", "--format", "jsonl");

        Assert.True(verbose.ExitCode == 0, verbose.Out + verbose.Err);
        var env = File.ReadLines(Directory.GetFiles(Path.Combine(Dir, "v"), "part-*.jsonl").Single())
            .Select(l => JsonDocument.Parse(l).RootElement).Single(r => r.GetProperty("key").GetString() == "env").GetProperty("output");
        Assert.Equal("3", env.GetProperty("OMP_NUM_THREADS").GetString());
        Assert.Equal("3", env.GetProperty("INFERPOOL_THREADS").GetString());
        Assert.Equal("PCI_BUS_ID", env.GetProperty("CUDA_DEVICE_ORDER").GetString());
        Assert.Equal("", env.GetProperty("CUDA_VISIBLE_DEVICES").GetString());
        Assert.Contains("a note from the worker about a.bin", verbose.Err, StringComparison.Ordinal);
        Assert.True(quiet.ExitCode == 0, quiet.Out + quiet.Err);
        Assert.DoesNotContain("a note from the worker", quiet.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BatchTimeout_FailsTheHungItemAloneAndTheJobGoesOn()
    {
        Write("a.bin", "x");
        Write("in.jsonl", """
            {"key": "before", "path": "a.bin"}
            {"key": "stuck", "path": "a.bin", "want": "hang"}
            {"key": "after", "path": "a.bin"}
            """);

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "in.jsonl", "--worker", FileWorker, "--devices", "cpu=1", "--batch-timeout", "8", "-o", "out", "--format", "jsonl");

        Assert.True(code == 1, stdout + stderr);
        var rows = File.ReadLines(Directory.GetFiles(Path.Combine(Dir, "out"), "part-*.jsonl").Single())
            .Select(l => JsonDocument.Parse(l).RootElement).ToDictionary(r => r.GetProperty("key").GetString()!, StringComparer.Ordinal);
        Assert.Equal("ok", rows["before"].GetProperty("status").GetString());
        Assert.Equal("ok", rows["after"].GetProperty("status").GetString());
        Assert.Equal("failed", rows["stuck"].GetProperty("status").GetString());
        Assert.StartsWith("TimeoutException", rows["stuck"].GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Progress_WhenTheOutputIsALog_PrintsAPlainLineEveryFiveSeconds()
    {
        var time = new TimerSignallingTime();
        var output = new SignallingWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output), Interactive = InteractionSupport.No, Ansi = AnsiSupport.No });
        var monitor = new PoolMonitor(time);
        var job = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var bound = TimeSpan.FromSeconds(30);

        var running = new ProgressDisplay(console, time, quiet: false).RunAsync(() => job.Task, monitor, () => 40);

        for (var line = 1; line <= 2; line++)
        {
            // The display asks the clock for its 5-second wait; just short of it, nothing is printed; at it, a line.
            await time.FiveSecondTimer.WaitAsync(bound);
            time.Advance(TimeSpan.FromSeconds(5) - TimeSpan.FromMilliseconds(1));
            Assert.Equal(line - 1, output.Lines);
            time.Advance(TimeSpan.FromMilliseconds(1));
            while (output.Lines < line)
            {
                Assert.True(await output.Written.WaitAsync(bound), $"no progress line {line}");
            }
        }

        job.SetResult(7);
        Assert.Equal(7, await running.WaitAsync(bound));
        Assert.Equal(2, output.Lines);
        Assert.Contains("0/40 (0%) · 0.0 items/s · 0 failed", output.ToString().Replace('\u00a0', ' '), StringComparison.Ordinal);
    }

    /// <summary>A fake clock that says when a 5-second timer is asked for.</summary>
    private sealed class TimerSignallingTime : FakeTimeProvider
    {
        public SemaphoreSlim FiveSecondTimer { get; } = new(0);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            if (dueTime == TimeSpan.FromSeconds(5))
            {
                FiveSecondTimer.Release();
            }

            return timer;
        }
    }

    /// <summary>A log that says when something has been written.</summary>
    private sealed class SignallingWriter : StringWriter
    {
        public SemaphoreSlim Written { get; } = new(0);

        public int Lines => ToString().Count(c => c == '\n');

        public override void Write(char value)
        {
            base.Write(value);
            Written.Release();
        }

        public override void Write(string? value)
        {
            base.Write(value);
            Written.Release();
        }

        public override void Write(char[] buffer, int index, int count)
        {
            base.Write(buffer, index, count);
            Written.Release();
        }
    }
}
