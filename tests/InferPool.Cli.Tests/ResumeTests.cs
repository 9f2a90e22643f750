using InferPool.Jobs;
using System.Diagnostics;
using System.Text.Json;
using InferPool.Jobs.Parts;

namespace InferPool.Cli.Tests;

public sealed class ResumeTests : TempFolderTest
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task Run_KilledAtSeveralPoints_ResumesWithEveryKeyOnceAndTheSameValues()
    {
        // 120 real images under unique keys, in parts of 10 rows.
        CopySamples(copies: 6);

        string[] common = ["--format", "jsonl", "--part-rows", "10", "-q"];
        var reference = await Cli.RunAsync(Dir, ["run", "in", "-o", "reference", .. common]);
        Assert.True(reference.ExitCode == 0, reference.Err);

        // Kill the real process with SIGKILL once 2, then 5, then 8 parts are committed; each restart resumes.
        var output = Path.Combine(Dir, "out");
        foreach (var partsBeforeKill in new[] { 2, 5, 8 })
        {
            using var process = Cli.Start(Dir, ["run", "in", "-o", "out", .. common]);
            _ = process.StandardOutput.ReadToEndAsync();
            _ = process.StandardError.ReadToEndAsync();
            await PartFiles.WaitForCommittedPartsAsync(output, partsBeforeKill, process, Bound);
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync().WaitAsync(Bound);
        }

        var final = await Cli.RunAsync(Dir, ["run", "in", "-o", "out", .. common]);
        Assert.True(final.ExitCode == 0, final.Err + final.Out);
        Assert.Contains("Resumed the job", final.Out, StringComparison.Ordinal);

        var expected = ReadRows(Path.Combine(Dir, "reference"));
        var actual = ReadRows(output);
        Assert.Equal(120, expected.Count);
        var keys = actual.Select(r => r.Key).ToList();
        Assert.Equal(keys.Count, keys.Distinct().Count());
        Assert.Equal(expected.Select(r => r.Key).Order(StringComparer.Ordinal), keys.Order(StringComparer.Ordinal));
        var byKey = actual.ToDictionary(r => r.Key, r => r.Embedding);
        foreach (var (key, embedding) in expected)
        {
            var other = byKey[key];
            Assert.Equal(embedding.Length, other.Length);
            for (var i = 0; i < embedding.Length; i++)
            {
                Assert.True(Math.Abs(embedding[i] - other[i]) <= 1e-5 * Math.Max(1, Math.Abs(embedding[i])), $"{key}[{i}]");
            }
        }

        Assert.Empty(Directory.GetFiles(output, "*.tmp"));
        Assert.True(JobJournal.Load(output)!.Finished);
    }

    [Fact]
    public async Task CtrlC_Once_FinishesInFlightCommitsAndResumes()
    {
        var (code, stdout, stderr) = await InterruptAsync(presses: 1);

        Assert.Equal(130, code);
        Assert.Contains("finishing the items in flight", stderr, StringComparison.Ordinal);
        Assert.Contains("Run the same command again to resume", stdout, StringComparison.Ordinal);
        var output = Path.Combine(Dir, "out");
        var journal = JobJournal.Load(output)!;
        Assert.False(journal.Finished);
        Assert.Equal(journal.CommittedRows, ReadRows(output).Count);
        Assert.Empty(Directory.GetFiles(output, "*.tmp"));
        await ResumeToEveryKeyOnceAsync();
    }

    [Fact]
    public async Task SigTerm_Once_FinishesInFlightCommitsAndResumes()
    {
        var (code, stdout, stderr) = await InterruptAsync(presses: 1, signal: "-TERM");

        Assert.Equal(143, code);
        Assert.Contains("Stopping (SIGTERM): finishing the items in flight", stderr, StringComparison.Ordinal);
        Assert.Contains("Stopped by SIGTERM", stdout, StringComparison.Ordinal);
        var output = Path.Combine(Dir, "out");
        var journal = JobJournal.Load(output)!;
        Assert.False(journal.Finished);
        Assert.True(journal.CommittedRows >= 10, $"{journal.CommittedRows} rows committed");
        Assert.Equal(journal.CommittedRows, ReadRows(output).Count);
        Assert.Empty(Directory.GetFiles(output, "*.tmp"));
        await ResumeToEveryKeyOnceAsync();
    }

    [Fact]
    public async Task SigTerm_Twice_StopsNowAndStaysResumable()
    {
        var (code, _, stderr) = await InterruptAsync(presses: 2, signal: "-TERM");

        Assert.Equal(143, code);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
        await ResumeToEveryKeyOnceAsync();
    }

    [Fact]
    public async Task CtrlC_Twice_StopsNowAndStaysResumable()
    {
        var (code, stdout, stderr) = await InterruptAsync(presses: 2);

        Assert.Equal(130, code);
        Assert.Contains("stopped; the parts committed so far are in", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr + stdout, StringComparison.Ordinal);
        Assert.False(JobJournal.Load(Path.Combine(Dir, "out"))!.Finished);
        await ResumeToEveryKeyOnceAsync();
    }

    [Fact]
    public async Task Run_SameFolderWithAnotherJob_IsRefusedUnlessForced()
    {
        var images = Path.Combine(Dir, "in");
        Directory.CreateDirectory(images);
        File.Copy(Path.Combine(Cli.SampleImages, "coffee.png"), Path.Combine(images, "coffee.png"));
        var first = await Cli.RunAsync(Dir, "run", "in", "-o", "out", "-q");
        Assert.Equal(0, first.ExitCode);

        var other = await Cli.RunAsync(Dir, "run", "in", "-o", "out", "-q", "--format", "jsonl");
        Assert.Equal(2, other.ExitCode);
        Assert.Contains("holds another job", other.Err, StringComparison.Ordinal);
        Assert.Contains("--force", other.Err, StringComparison.Ordinal);

        var forced = await Cli.RunAsync(Dir, "run", "in", "-o", "out", "-q", "--format", "jsonl", "--force");
        Assert.Equal(0, forced.ExitCode);
        Assert.Equal(["part-00000.jsonl"], Directory.GetFiles(Path.Combine(Dir, "out"), "part-*").Select(Path.GetFileName));
    }

    [Fact]
    public async Task Run_TornLeftoversFromACrash_AreDiscardedOnResume()
    {
        var images = Path.Combine(Dir, "in");
        Directory.CreateDirectory(images);
        foreach (var name in new[] { "coffee.png", "rocket.jpg", "chelsea.png" })
        {
            File.Copy(Path.Combine(Cli.SampleImages, name), Path.Combine(images, name));
        }

        // A run whose crash left a committed part, a part renamed but not yet journalled, and a temporary file.
        var done = await Cli.RunAsync(Dir, "run", "in", "-o", "out", "-q", "--format", "jsonl", "--part-rows", "1");
        Assert.Equal(0, done.ExitCode);
        var output = Path.Combine(Dir, "out");
        var journal = JobJournal.Load(output)!;
        var unjournalled = journal.Parts[^1];
        journal.Parts.RemoveAt(journal.Parts.Count - 1);
        journal.Finished = false;
        await journal.SaveAsync(output);
        Write("out/part-00009.jsonl.tmp", "{\"key\": \"half a row");

        var resumed = await Cli.RunAsync(Dir, "run", "in", "-o", "out", "-q", "--format", "jsonl", "--part-rows", "1");

        Assert.True(resumed.ExitCode == 0, resumed.Err);
        Assert.Contains("2 item(s) were already committed", resumed.Out, StringComparison.Ordinal);
        Assert.Contains("2 uncommitted leftover file(s) discarded", resumed.Out, StringComparison.Ordinal);
        var keys = ReadRows(output).Select(r => r.Key).Order(StringComparer.Ordinal);
        Assert.Equal(["chelsea.png", "coffee.png", "rocket.jpg"], keys);
        Assert.DoesNotContain(unjournalled.Name, JobJournal.Load(output)!.Parts.Select(p => p.Name).Take(2));
    }

    [Fact]
    public async Task Run_FailFast_StopsTakingInputAtTheFirstFailureAndCanResume()
    {
        var images = Path.Combine(Dir, "in");
        Directory.CreateDirectory(images);
        Write("in/000-empty.jpg", []);
        for (var copy = 0; copy < 4; copy++)
        {
            foreach (var file in Directory.GetFiles(Cli.SampleImages).Where(f => !f.EndsWith(".md", StringComparison.Ordinal)))
            {
                File.Copy(file, Path.Combine(images, $"{copy}-{Path.GetFileName(file)}"));
            }
        }

        var stopped = await Cli.RunAsync(Dir, "run", "in", "-o", "out", "-q", "--format", "jsonl", "--fail-fast");

        Assert.Equal(1, stopped.ExitCode);
        Assert.Contains("Stopped at the first failure (--fail-fast)", stopped.Out, StringComparison.Ordinal);
        // No more than what was in flight when the first item failed: the pool admits at most its in-flight bound.
        var written = ReadRows(Path.Combine(Dir, "out")).Count;
        var inFlight = new InferencePoolOptions { Replicas = JobDefaults.Plan(Devices.NvmlDeviceInventory.Discover()), MaxBatchSize = 1 }.EffectiveMaxInFlight;
        Assert.InRange(written, 1, Math.Min(80, inFlight + 1));
        Assert.False(JobJournal.Load(Path.Combine(Dir, "out"))!.Finished);

        var resumed = await Cli.RunAsync(Dir, "run", "in", "-o", "out", "-q", "--format", "jsonl");
        Assert.Equal(1, resumed.ExitCode); // the empty file still fails, now as one of 81 rows
        Assert.Equal(81, ReadRows(Path.Combine(Dir, "out")).Select(r => r.Key).Distinct().Count());
    }

    private static readonly string[] InterruptedRun = ["run", "in", "-o", "out", "--format", "jsonl", "--part-rows", "10", "-q"];

    /// <summary>Runs 120 images and sends <paramref name="signal"/> (Ctrl+C's SIGINT by default) once or twice after the first part is committed.</summary>
    private async Task<(int Code, string Out, string Err)> InterruptAsync(int presses, string signal = "-INT")
    {
        if (signal == "-INT" && SigIntIgnored())
        {
            Assert.Fail("SIGINT is ignored in this test process (it was started in the background by a shell without job control, or under nohup), and the inferpool it starts inherits that (an ignored signal stays ignored across exec): Ctrl-C cannot reach it. Run the tests in the foreground.");
        }

        CopySamples(copies: 6);
        using var process = Cli.Start(Dir, InterruptedRun);
        var stdout = process.StandardOutput.ReadToEndAsync();
        // The first press is acknowledged on stderr before the second is sent: two signals sent back to back
        // can merge into one before the process handles the first (POSIX signals do not queue).
        var acknowledged = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stderr = Task.Run(async () =>
        {
            var all = new System.Text.StringBuilder();
            while (await process.StandardError.ReadLineAsync() is { } line)
            {
                all.AppendLine(line);
                if (line.StartsWith("Stopping (", StringComparison.Ordinal))
                {
                    acknowledged.TrySetResult();
                }
            }

            acknowledged.TrySetResult();
            return all.ToString();
        });
        await PartFiles.WaitForCommittedPartsAsync(Path.Combine(Dir, "out"), 1, process, Bound);
        for (var i = 0; i < presses; i++)
        {
            await SignalAsync(process, signal);
            if (i == 0)
            {
                await acknowledged.Task.WaitAsync(Bound);
            }
        }

        await process.WaitForExitAsync().WaitAsync(Bound);
        return (process.ExitCode, await stdout, await stderr);
    }

    private async Task ResumeToEveryKeyOnceAsync()
    {
        var resumed = await Cli.RunAsync(Dir, InterruptedRun);
        Assert.Equal(0, resumed.ExitCode);
        var keys = ReadRows(Path.Combine(Dir, "out")).Select(r => r.Key).ToList();
        Assert.Equal(120, keys.Count);
        Assert.Equal(120, keys.Distinct().Count());
    }

    /// <summary>True when this process ignores SIGINT (bit 1 of SigIgn in /proc/self/status); a child keeps an ignored signal ignored across exec.</summary>
    private static bool SigIntIgnored()
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status))
        {
            return false;
        }

        var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (ulong.Parse(line["SigIgn:".Length..].Trim(), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture) & 0b10) != 0;
    }

    private static async Task SignalAsync(Process process, string signal)
    {
        using var kill = Process.Start("kill", [signal, process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        await kill.WaitForExitAsync().WaitAsync(Bound);
    }

    private void CopySamples(int copies)
    {
        for (var copy = 0; copy < copies; copy++)
        {
            var folder = Path.Combine(Dir, "in", $"set{copy}");
            Directory.CreateDirectory(folder);
            foreach (var file in Directory.GetFiles(Cli.SampleImages).Where(f => !f.EndsWith(".md", StringComparison.Ordinal)))
            {
                File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
            }
        }
    }

    private static List<(string Key, float[] Embedding)> ReadRows(string output)
    {
        var rows = new List<(string, float[])>();
        foreach (var part in Directory.GetFiles(output, "part-*.jsonl"))
        {
            foreach (var line in File.ReadLines(part))
            {
                using var doc = JsonDocument.Parse(line);
                var embedding = doc.RootElement.GetProperty("embedding");
                rows.Add((doc.RootElement.GetProperty("key").GetString()!, embedding.ValueKind == JsonValueKind.Null ? [] : [.. embedding.EnumerateArray().Select(e => e.GetSingle())]));
            }
        }

        return rows;
    }
}
