using System.Diagnostics;
using System.Runtime.InteropServices;

namespace InferPool.Bench;

/// <summary>
/// CPU time spent, for rates that a busy neighbour on a shared machine moves less than it moves wall time: this process's
/// (the raw loops and the in-process job, which run alone in it), and that of the child processes it has waited for (the
/// command), which only the C library's <c>getrusage</c> reports once a child has exited (Linux; null elsewhere).
/// </summary>
internal static partial class CpuTime
{
    private const int Children = -1; // RUSAGE_CHILDREN

    /// <summary>This process's CPU time so far, all threads, user and system.</summary>
    public static TimeSpan Self()
    {
        using var self = Process.GetCurrentProcess();
        return self.TotalProcessorTime;
    }

    /// <summary>The user and system time of every child process waited for so far, or null where it cannot be read.</summary>
    public static TimeSpan? WaitedChildren()
    {
        if (!OperatingSystem.IsLinux() || GetRUsage(Children, out var usage) != 0)
        {
            return null;
        }

        return TimeSpan.FromMicroseconds((usage.UserSeconds + usage.SystemSeconds) * 1e6 + usage.UserMicroseconds + usage.SystemMicroseconds);
    }

    /// <summary>The head of <c>struct rusage</c> on 64-bit Linux: two <c>timeval</c>s, then fourteen longs.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct RUsage
    {
        public long UserSeconds;
        public long UserMicroseconds;
        public long SystemSeconds;
        public long SystemMicroseconds;
        public Rest Others;
    }

    [System.Runtime.CompilerServices.InlineArray(14)]
    private struct Rest
    {
        private long _first;
    }

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int GetRUsage(int who, out RUsage usage);
}
