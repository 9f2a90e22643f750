using System.Diagnostics;
using System.Text.Json;
using InferPool.Devices;
using InferPool.Replicas;

namespace InferPool.Processes.Tests;

/// <summary>The Python helper installed with pip (into a folder of its own) serves a worker that has no copy of it beside it.</summary>
public sealed class HelperPackageTests : IDisposable
{
    private readonly string _target = Directory.CreateTempSubdirectory("inferpool-pip-").FullName;

    [SkippableFact]
    public async Task Pip_installs_the_helper_and_a_worker_imports_it_from_anywhere()
    {
        // The build backend is the package's own, standard library only: pip needs nothing from an index.
        var package = Path.Combine(AppContext.BaseDirectory, "helper-package");
        var (code, output) = await RunAsync("python3", "-m", "pip", "install", "--no-index", "--quiet", "--target", _target, package);
        Requirement.Needs(code != 0 && output.Contains("No module named pip", StringComparison.Ordinal) ? "python3 here has no pip (apt-get install python3-pip)" : null);
        Assert.True(code == 0, output);
        Assert.True(File.Exists(Path.Combine(_target, "inferpool_worker.py")), "pip did not install the module");

        var worker = Path.Combine(AppContext.BaseDirectory, "installed", "installed_worker.py");
        Assert.False(File.Exists(Path.Combine(Path.GetDirectoryName(worker)!, "inferpool_worker.py")));
        var factory = new WorkerReplicaFactory(new WorkerOptions { Command = $"PYTHONPATH={_target} python3 {worker}", ShutdownTimeout = TimeSpan.FromSeconds(2) });
        await using var replica = await factory.CreateAsync(ReplicaPlan.Cpu(1).Slots[0]);
        var results = await replica.InferAsync([new WorkerInput("a", JsonSerializer.SerializeToElement(4))]);

        Assert.Equal(40, Assert.Single(results).Value.GetInt32());
    }

    public void Dispose() => Directory.Delete(_target, recursive: true);

    private static async Task<(int Code, string Output)> RunAsync(string file, params string[] args)
    {
        using var process = new Process { StartInfo = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true } };
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return (-1, ex.Message);
        }

        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        return (process.ExitCode, await stdout + await stderr);
    }
}
