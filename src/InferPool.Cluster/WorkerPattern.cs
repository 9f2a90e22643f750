using System.Text.RegularExpressions;

namespace InferPool.Cluster;

/// <summary>Whether a node may run a worker command: glob patterns (<c>*</c> any run of characters, <c>?</c> one) over the whole command line.</summary>
public static class WorkerPattern
{
    /// <summary>True when <paramref name="command"/> matches one of <paramref name="patterns"/> as a whole (case-sensitive).</summary>
    /// <param name="patterns">The allowed patterns; none allows nothing.</param>
    /// <param name="command">A worker job's command line.</param>
    public static bool Allows(IEnumerable<string> patterns, string command)
    {
        ArgumentNullException.ThrowIfNull(patterns);
        ArgumentNullException.ThrowIfNull(command);
        return patterns.Any(p => Regex.IsMatch(command, "^" + Regex.Escape(p).Replace(@"\*", ".*", StringComparison.Ordinal).Replace(@"\?", ".", StringComparison.Ordinal) + "$", RegexOptions.Singleline | RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1)));
    }
}
