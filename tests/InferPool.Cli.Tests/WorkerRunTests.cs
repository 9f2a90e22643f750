using System.Diagnostics;
using System.Text.Json;

namespace InferPool.Cli.Tests;

/// <summary><c>inferpool run --worker</c>: the real executable driving real Python worker processes.</summary>
public sealed class WorkerRunTests : TempFolderTest
{
    private static readonly string FileWorker = $"python3 {Path.Combine(Cli.ToolDirectory, "workers", "file_worker.py")}";

    [Fact]
    public async Task A_worker_that_prints_banners_to_stdout_runs_every_item_and_the_lines_reach_the_log()
    {
        for (var i = 0; i < 6; i++)
        {
            Write($"in/f{i}.bin", [1]);
        }

        var noisy = $"python3 {Path.Combine(Cli.ToolDirectory, "workers", "noisy_worker.py")}";
        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "in", "--worker", noisy, "--devices", "cpu=2", "--batch", "2", "-o", "out", "--format", "jsonl", "-v");

        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Equal(6, ReadRows(Path.Combine(Dir, "out")).Values.Count(r => r.GetProperty("status").GetString() == "ok"));
        Assert.Contains("wrote to stdout, which is for protocol messages only (print to stderr): Loading weights... done", stderr, StringComparison.Ordinal);
        Assert.Contains("item(s)", stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Killing_inferpool_with_SIGKILL_mid_batch_leaves_no_worker_process_behind(bool prefork)
    {
        Write("in/a.bin", [1]);
        Write("in/b.bin", [2]);
        var busyDir = Directory.CreateDirectory(Path.Combine(Dir, "busy")).FullName;
        var busy = $"BUSY_DIR={busyDir} python3 {Path.Combine(Cli.ToolDirectory, "workers", "busy_worker.py")}";
        string[] run = ["run", "in", "--worker", busy, "--devices", "cpu=2", "-o", "out", "-q"];
        using var process = Cli.Start(Dir, prefork ? [.. run, "--prefork"] : run);
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();

        // Every model loaded (one loader with pre-fork, else one per worker), and one replica inside a batch.
        var loads = prefork ? 1 : 2;
        await WaitUntilAsync(
            () => Directory.GetFiles(busyDir, "started-*").Length == 2 && Directory.GetFiles(busyDir, "pid-*").Length == loads && File.Exists(Path.Combine(busyDir, "busy")),
            process,
            "the workers up and one busy");
        var pids = Directory.GetFiles(busyDir, "*-*").Select(f => int.Parse(Path.GetFileName(f).Split('-')[1], System.Globalization.CultureInfo.InvariantCulture)).Distinct().ToList();
        Assert.Equal(loads * 2, Directory.GetFiles(busyDir, "pid-*").Length + Directory.GetFiles(busyDir, "child-*").Length);
        Assert.NotEmpty(Directory.GetFiles(busyDir, "served-*"));
        Assert.All(pids, pid => Assert.True(Directory.Exists($"/proc/{pid}"), $"{pid} should be running"));

        process.Kill(); // SIGKILL: inferpool gets no chance to stop its workers
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
        await WaitUntilAsync(() => pids.All(pid => !IsAlive(pid)), null, $"no worker left of {string.Join(", ", pids)}", TimeSpan.FromSeconds(15));
        _ = await output;
        _ = await errors;
    }

    [Fact]
    public async Task Editing_the_worker_script_makes_another_job_unless_resume_insists()
    {
        Write("in/a.bin", [1]);
        var script = Path.Combine(Dir, "my_worker.py");
        File.Copy(Path.Combine(Cli.ToolDirectory, "workers", "file_worker.py"), script);
        File.Copy(Path.Combine(Cli.ToolDirectory, "workers", "inferpool_worker.py"), Path.Combine(Dir, "inferpool_worker.py"));
        string[] run = ["run", "in", "--worker", "python3 my_worker.py", "--devices", "cpu=1", "-o", "out", "-q"];
        Assert.Equal(0, (await Cli.RunAsync(Dir, run)).ExitCode);

        await File.AppendAllTextAsync(script, "\n# changed\n");
        var changed = await Cli.RunAsync(Dir, run);
        Assert.True(changed.ExitCode == 2, changed.Out + changed.Err);
        Assert.Contains("its files have changed since", changed.Err, StringComparison.Ordinal);
        Assert.Contains("--resume", changed.Err, StringComparison.Ordinal);

        var insisted = await Cli.RunAsync(Dir, [.. run, "--resume"]);
        Assert.True(insisted.ExitCode == 0, insisted.Out + insisted.Err);
        Assert.Equal(0, (await Cli.RunAsync(Dir, run)).ExitCode);
    }

    /// <summary>Alive: the process exists and is not a zombie waiting for its (dead) parent to reap it.</summary>
    private static bool IsAlive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Bounded polling of process state in /proc and marker files: no event tells this test about them.</summary>
    private static async Task WaitUntilAsync(Func<bool> condition, Process? process, string what, TimeSpan? bound = null)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.False(process?.HasExited == true, $"inferpool exited before {what}");
            Assert.True(clock.Elapsed < (bound ?? TimeSpan.FromMinutes(2)), $"gave up waiting for {what}");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task Files_go_through_worker_processes_and_a_crashing_item_fails_alone()
    {
        var inputs = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        for (var i = 0; i < 12; i++)
        {
            inputs[$"in/f{i:D2}.bin"] = [(byte)(i + 1), .. new byte[i * 7]];
        }

        inputs["in/g-crash.bin"] = [9];
        inputs["in/h-bad.bin"] = [9];
        foreach (var (name, bytes) in inputs)
        {
            Write(name, bytes);
        }

        File.WriteAllLines(Path.Combine(Dir, "list.txt"), inputs.Keys.Select(k => Path.Combine(Dir, k)));

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "list.txt", "--worker", FileWorker, "--devices", "cpu=2", "--batch", "5", "-o", "out", "--format", "jsonl", "-q");

        Assert.True(code == 1, $"exit {code}\n{stdout}\n{stderr}");
        var rows = ReadRows(Path.Combine(Dir, "out"));
        Assert.Equal(inputs.Count, rows.Count);
        foreach (var (name, bytes) in inputs.Where(kv => !kv.Key.Contains("crash", StringComparison.Ordinal) && !kv.Key.Contains("bad", StringComparison.Ordinal)))
        {
            var row = rows[Path.Combine(Dir, name)];
            Assert.Equal("ok", row.GetProperty("status").GetString());
            Assert.Equal([bytes.Length, bytes[0]], row.GetProperty("output").EnumerateArray().Select(v => v.GetSingle()).ToArray());
            Assert.StartsWith("cpu#", row.GetProperty("replica").GetString(), StringComparison.Ordinal);
        }

        // A real process exit on that item: the worker was replaced, the batch retried in halves, and only it failed.
        var crashed = rows[Path.Combine(Dir, "in/g-crash.bin")];
        Assert.Equal("failed", crashed.GetProperty("status").GetString());
        Assert.Contains("exit code 3", crashed.GetProperty("error").GetString(), StringComparison.Ordinal);
        var bad = rows[Path.Combine(Dir, "in/h-bad.bin")];
        Assert.Contains("ValueError: refusing h-bad.bin", bad.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, bad.GetProperty("attempts").GetInt32());
    }

    [Fact]
    public async Task Records_reach_the_worker_whole_with_their_path_made_absolute_and_json_output_is_kept()
    {
        Write("data/a.bin", [1, 2, 3]);
        Write("records.jsonl", """
            {"key": "r1", "path": "data/a.bin", "want": "record", "extra": {"n": 5}}
            {"key": "r2", "path": "data/a.bin", "want": "text"}
            not json
            """);

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "records.jsonl", "--worker", FileWorker, "--worker-output", "json", "-o", "out", "--format", "jsonl", "-q");

        Assert.True(code == 1, $"exit {code}\n{stdout}\n{stderr}");
        var rows = ReadRows(Path.Combine(Dir, "out"));
        var echoed = rows["r1"].GetProperty("output");
        Assert.Equal(Path.Combine(Dir, "data", "a.bin"), echoed.GetProperty("path").GetString());
        Assert.Equal(5, echoed.GetProperty("extra").GetProperty("n").GetInt32());
        Assert.Equal("a string for a.bin", rows["r2"].GetProperty("output").GetString());
        Assert.Contains("not valid JSON", rows["line 3"].GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_output_that_is_not_numbers_fails_its_item_with_the_reason_in_vector_mode()
    {
        Write("data/a.bin", [1, 2, 3]);
        Write("records.jsonl", """
            {"key": "numbers", "path": "data/a.bin"}
            {"key": "words", "path": "data/a.bin", "want": "text"}
            """);

        var (code, _, _) = await Cli.RunAsync(Dir, "run", "records.jsonl", "--worker", FileWorker, "-o", "out", "--format", "parquet", "-q");

        Assert.Equal(1, code);
        var rows = await PartFiles.ReadParquetAsync(Path.Combine(Dir, "out"));
        Assert.Equal("ok", rows["numbers"]["status"]);
        Assert.Equal([3f, 1f], ((System.Collections.IEnumerable)rows["numbers"]["output"]).Cast<float>().ToArray());
        Assert.Contains("InvalidOutput", (string)rows["words"]["error"], StringComparison.Ordinal);
        Assert.Contains("keeps outputs as JSON", (string)rows["words"]["error"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_finished_worker_job_resumes_to_nothing_and_another_command_is_another_job()
    {
        Write("in/a.bin", [1]);
        Write("in/b.png", [2]);
        string[] run = ["run", "in", "--worker", FileWorker, "-o", "out", "-q"];
        Assert.Equal(0, (await Cli.RunAsync(Dir, run)).ExitCode);

        var again = await Cli.RunAsync(Dir, run);
        Assert.Equal(0, again.ExitCode);
        Assert.Contains("Nothing to do", again.Out, StringComparison.Ordinal);

        var other = await Cli.RunAsync(Dir, ["run", "in", "--worker", FileWorker + " --other", "-o", "out", "-q"]);
        Assert.Equal(2, other.ExitCode);
        Assert.Contains("it was started with model worker", other.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_worker_that_cannot_start_fails_the_job_with_its_command_and_stderr()
    {
        Write("in/a.bin", [1]);

        var (code, _, stderr) = await Cli.RunAsync(Dir, "run", "in", "--worker", "python3 /nonexistent/worker.py", "-o", "out", "-q");

        Assert.Equal(2, code);
        Assert.Contains("/nonexistent/worker.py", stderr, StringComparison.Ordinal);
        Assert.Contains("No such file", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Worker_and_model_together_are_refused()
    {
        var (code, _, stderr) = await Cli.RunAsync(Dir, "run", "--worker", FileWorker, "--model", "resnet18");

        Assert.Equal(2, code);
        Assert.Contains("--worker contradicts --model and --tokenizer", stderr, StringComparison.Ordinal);
    }

    /// <summary>The PyTorch ResNet-18 sample, where an interpreter with torch and Pillow exists (Debian: python3-torch python3-pil).</summary>
    [SkippableFact]
    public async Task The_torch_resnet18_sample_embeds_images_the_same_in_every_worker_process()
    {
        var python = PythonWithTorch.Value;
        Requirement.Needs(python is null ? "No python3 with torch and Pillow here (apt-get install python3-torch python3-pil); the torch sample was not run." : null);
        var image = Path.Combine(Cli.SampleImages, "astronaut.png");
        Write("bad.jpg", "not an image");
        Write("records.jsonl", string.Join('\n', [
            .. Enumerable.Range(0, 6).Select(i => $$"""{"key": "copy{{i}}", "path": "{{image}}"}"""),
            """{"key": "bad", "path": "bad.jpg"}""",
        ]));
        var worker = $"{python} {Path.Combine(Cli.ToolDirectory, "workers", "resnet18_torch.py")}";

        var (code, stdout, stderr) = await Cli.RunAsync(Dir, "run", "records.jsonl", "--worker", worker, "--devices", "cpu=2", "--batch", "2", "-o", "out", "--format", "jsonl");

        Assert.True(code == 1, $"exit {code}\n{stdout}\n{stderr}");
        var rows = ReadRows(Path.Combine(Dir, "out"));
        var vectors = Enumerable.Range(0, 6).Select(i => rows[$"copy{i}"].GetProperty("output").EnumerateArray().Select(v => v.GetSingle()).ToArray()).ToList();
        Assert.All(vectors, v => Assert.Equal(512, v.Length));
        foreach (var v in vectors)
        {
            Assert.All(v.Zip(vectors[0]), p => Assert.Equal(p.Second, p.First, 1e-4f));
        }

        // Another worker process (a fresh interpreter, its own model) computes the same function: the seed is fixed.
        // Which replica takes which batch depends on timing, so this is checked across two runs instead.
        var again = await Cli.RunAsync(Dir, "run", "records.jsonl", "--worker", worker, "--devices", "cpu=1", "-o", "out2", "--format", "jsonl", "-q");
        Assert.True(again.ExitCode == 1, again.Err);
        var other = ReadRows(Path.Combine(Dir, "out2"))["copy0"].GetProperty("output").EnumerateArray().Select(v => v.GetSingle()).ToArray();
        Assert.All(other.Zip(vectors[0]), p => Assert.Equal(p.Second, p.First, 1e-4f));

        // Pre-forked replicas compute the same function too: one load, replicas forked with two threads each. The
        // weights come from a file (the same seeded ones), so that load() copies large tensors, which runs OpenMP
        // parallel regions; had the loader run them with two threads, the forked replicas would hang in their first.
        var weights = Path.Combine(Dir, "weights.pth");
        var save = Process.Start(new ProcessStartInfo(python!, ["-c", $"import sys, torch; sys.path.insert(0, sys.argv[1]); import resnet18_torch as s; torch.manual_seed(0); torch.save(s.resnet18_features().state_dict(), sys.argv[2])", Path.Combine(Cli.ToolDirectory, "workers"), weights]))!;
        await save.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        Assert.Equal(0, save.ExitCode);
        var forked = await Cli.RunAsync(Dir, "run", "records.jsonl", "--worker", $"{worker} --weights {weights}", "--prefork", "--devices", "cpu=2", "--threads", "2", "--batch", "2", "-o", "out3", "--format", "jsonl");
        Assert.True(forked.ExitCode == 1, forked.Out + forked.Err);
        var forkedRows = ReadRows(Path.Combine(Dir, "out3"));
        foreach (var i in Enumerable.Range(0, 6))
        {
            var v = forkedRows[$"copy{i}"].GetProperty("output").EnumerateArray().Select(v => v.GetSingle()).ToArray();
            Assert.All(v.Zip(vectors[0]), p => Assert.Equal(p.Second, p.First, 1e-4f));
        }

        Assert.Contains("UnidentifiedImageError", forkedRows["bad"].GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Contains("UnidentifiedImageError", rows["bad"].GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Contains("Resident memory per replica: cpu#0", stdout, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task The_gpu_check_script_reports_each_row_and_a_failing_configuration_does_not_stop_the_others()
    {
        Requirement.Needs(PythonWithTorch.Value is null ? "no python3 with torch, Pillow and numpy (apt-get install python3-torch python3-pil python3-numpy)" : null);
        var root = new DirectoryInfo(Cli.ToolDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "InferPool.slnx")))
        {
            root = root.Parent;
        }

        Skip.If(root is null, "not run from a checkout of the repository");
        var json = Path.Combine(Dir, "rows.json");
        var start = new ProcessStartInfo(PythonWithTorch.Value!, [Path.Combine(root!.FullName, "bench", "gpu", "check.py"), "--inferpool", "/nonexistent/inferpool", "--device", "cpu", "--replicas", "1", "--batch", "2", "--repeat", "1", "--json", json])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(3));

        Assert.True(process.ExitCode == 0, await stdout + await stderr);
        var rows = JsonDocument.Parse(File.ReadAllText(json)).RootElement.EnumerateArray().ToList();
        // Two loop rows, the two sweep rows, then the memory cap and out-of-memory checks (GPU only) and the pull check.
        Assert.Equal(7, rows.Count);
        Assert.All(rows.Take(2), r => Assert.True(r.GetProperty("img_per_s").GetDouble() > 0 && r.GetProperty("startup_s").GetDouble() >= 0));
        Assert.All(rows.Skip(2).Take(2).Append(rows[6]), r => Assert.Contains("FileNotFoundError", r.GetProperty("error").GetString(), StringComparison.Ordinal));
        Assert.All(rows.Skip(4).Take(2), r => Assert.Equal("needs a GPU", r.GetProperty("error").GetString()));
    }

    private static readonly Lazy<string?> PythonWithTorch = new(() =>
    {
        foreach (var candidate in new[] { "python3", "/usr/bin/python3" })
        {
            try
            {
                using var process = Process.Start(new ProcessStartInfo(candidate, ["-c", "import torch, PIL, numpy"]) { RedirectStandardError = true });
                process!.StandardError.ReadToEnd();
                process.WaitForExit();
                if (process.ExitCode == 0)
                {
                    return candidate;
                }
            }
            catch (System.ComponentModel.Win32Exception)
            {
                // Not installed.
            }
        }

        return null;
    });

    private static Dictionary<string, JsonElement> ReadRows(string output) =>
        Directory.GetFiles(output, "part-*.jsonl")
            .SelectMany(File.ReadLines)
            .Select(line => JsonDocument.Parse(line).RootElement)
            .ToDictionary(row => row.GetProperty("key").GetString()!, StringComparer.Ordinal);
}
