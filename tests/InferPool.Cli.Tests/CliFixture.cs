using System.Diagnostics;

using InferPool.TestKit;

namespace InferPool.Cli.Tests;

/// <summary>Runs the real <c>inferpool</c> as a child process (the CLI assembly built next to the tests) and captures what it prints.</summary>
internal static class Cli
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(3);

    public static string ToolDirectory => TestFiles.Directory;

    public static string SampleImages => TestFiles.SampleImages;

    public static string BuiltInModel => TestFiles.BuiltInModel;

    public static Task<(int ExitCode, string Out, string Err)> RunAsync(string workingDirectory, params string[] args) =>
        RunAsync(workingDirectory, wrapper: [], args);

    /// <summary>Runs the tool under a wrapper command (e.g. setpriv), which gets the dotnet command line appended.</summary>
    public static async Task<(int ExitCode, string Out, string Err)> RunAsync(string workingDirectory, string[] wrapper, params string[] args)
    {
        using var process = Start(workingDirectory, wrapper, args);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(Bound);
        }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        return (process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Starts the tool without waiting; the caller reads or discards its output and disposes it.</summary>
    public static Process Start(string workingDirectory, params string[] args) => Start(workingDirectory, [], args);

    /// <summary>Starts the tool under a wrapper command (e.g. unshare), which gets the dotnet command line appended.</summary>
    public static Process Start(string workingDirectory, string[] wrapper, string[] args)
    {
        var start = new ProcessStartInfo(wrapper.Length > 0 ? wrapper[0] : "dotnet")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in wrapper.Skip(1).Concat(wrapper.Length > 0 ? ["dotnet"] : []))
        {
            start.ArgumentList.Add(arg);
        }

        start.ArgumentList.Add(Path.Combine(ToolDirectory, "InferPool.Cli.dll"));
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        return Process.Start(start)!;
    }
}
