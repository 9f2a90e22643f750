using System.Globalization;

namespace InferPool.Processes;

/// <summary>Resident memory of a process and its descendants, read from <c>/proc</c> (Linux); null elsewhere.</summary>
internal static class ProcessTree
{
    /// <summary>The summed resident set of <paramref name="processId"/> and every process below it, or null when it cannot be read.</summary>
    public static long? ResidentBytes(int processId)
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
            if (!seen.Add(pid))
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

    private static long ResidentOf(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                // "VmRSS:     12345 kB"
                var kilobytes = line["VmRSS:".Length..].Trim().Split(' ')[0];
                return long.Parse(kilobytes, CultureInfo.InvariantCulture) * 1024;
            }
        }

        return 0;
    }
}
