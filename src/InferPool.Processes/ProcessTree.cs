using System.Globalization;

namespace InferPool.Processes;

/// <summary>
/// Memory of a process and its descendants, read from <c>/proc</c> (Linux); null elsewhere. It is the proportional
/// set size (<c>Pss</c> in <c>smaps_rollup</c>: a page shared by n processes counts 1/n in each), so that processes
/// forked from one another, sharing their pages copy-on-write, add up to what they really hold; the resident set
/// where the kernel has no <c>smaps_rollup</c>.
/// </summary>
internal static class ProcessTree
{
    /// <summary>
    /// The summed memory of <paramref name="processId"/> and every process below it, leaving out
    /// <paramref name="leaveOut"/> and the processes below that one, or null when it cannot be read.
    /// </summary>
    public static long? ResidentBytes(int processId, int? leaveOut = null)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        long total = 0;
        var pending = new Stack<int>([processId]);
        var seen = new HashSet<int>();
        while (pending.TryPop(out var pid))
        {
            if (pid == leaveOut || !seen.Add(pid))
            {
                continue;
            }

            try
            {
                total += ResidentOf(pid);
                foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
                {
                    foreach (var child in File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    {
                        pending.Push(int.Parse(child, CultureInfo.InvariantCulture));
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Exited while being read: it holds no memory any more.
            }
        }

        return seen.Count > 0 ? total : null;
    }

    /// <summary>The parent of <paramref name="processId"/>, or null when it cannot be read.</summary>
    public static int? ParentOf(int processId)
    {
        try
        {
            // "pid (comm) state ppid …": the command name may hold spaces and parentheses, so read after the last ')'.
            var stat = File.ReadAllText($"/proc/{processId}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return int.Parse(fields[1], CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }

    private static long ResidentOf(int pid) =>
        File.Exists($"/proc/{pid}/smaps_rollup") ? Kilobytes($"/proc/{pid}/smaps_rollup", "Pss:") : Kilobytes($"/proc/{pid}/status", "VmRSS:");

    private static long Kilobytes(string path, string field)
    {
        foreach (var line in File.ReadLines(path))
        {
            if (line.StartsWith(field, StringComparison.Ordinal))
            {
                // "Pss:     12345 kB"
                var kilobytes = line[field.Length..].Trim().Split(' ')[0];
                return long.Parse(kilobytes, CultureInfo.InvariantCulture) * 1024;
            }
        }

        return 0;
    }
}
