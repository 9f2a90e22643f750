namespace InferPool.Processes;

/// <summary>How worker processes are started.</summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>option</term><description>default</description></listheader>
/// <item><term><see cref="Command"/></term><description>required, e.g. <c>python3 my_infer.py</c>; run by <c>/bin/sh -c</c></description></item>
/// <item><term><see cref="WorkingDirectory"/></term><description>the current directory</description></item>
/// <item><term><see cref="StartTimeout"/></term><description>60 s (loading a model can be slow)</description></item>
/// <item><term><see cref="ShutdownTimeout"/></term><description>5 s, then the process is killed</description></item>
/// </list>
/// </remarks>
public sealed class WorkerOptions
{
    /// <summary>The command line that starts one worker.</summary>
    public required string Command { get; init; }

    /// <summary>Where workers start; null for the current directory.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>How long a worker may take to say hello (load its model).</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a worker may take to exit after shutdown before it is killed.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Extra environment variables for every worker.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();
}
