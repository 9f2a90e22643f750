using System.Collections.Concurrent;
using System.Diagnostics;

namespace InferPool.Processes;

/// <summary>
/// Starts processes from one thread that lives as long as this process. Linux delivers a parent-death signal
/// (<c>PR_SET_PDEATHSIG</c>, which <c>setpriv --pdeathsig</c> sets) when the <em>thread</em> that forked the child
/// ends, not the process: started from a thread-pool thread that the pool later retires, a worker would be killed
/// for no reason.
/// </summary>
internal static class ProcessLauncher
{
    private static readonly BlockingCollection<(Process Process, TaskCompletionSource<bool> Started)> Requests = [];

    static ProcessLauncher()
    {
        var thread = new Thread(Run) { IsBackground = true, Name = "InferPool worker launcher" };
        thread.Start();
    }

    /// <summary>Starts <paramref name="process"/> on the launcher thread.</summary>
    public static Task<bool> StartAsync(Process process)
    {
        var started = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        Requests.Add((process, started));
        return started.Task;
    }

    private static void Run()
    {
        foreach (var (process, started) in Requests.GetConsumingEnumerable())
        {
            try
            {
                started.SetResult(process.Start());
            }
            catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException or PlatformNotSupportedException)
            {
                started.SetException(ex);
            }
        }
    }
}
