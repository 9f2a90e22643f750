using InferPool.Devices;

namespace InferPool.Processes;

/// <summary>How worker processes are started.</summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>option</term><description>default</description></listheader>
/// <item><term><see cref="Command"/></term><description>required, e.g. <c>python3 my_infer.py</c>; run by <c>/bin/sh -c</c></description></item>
/// <item><term><see cref="WorkingDirectory"/></term><description>the current directory</description></item>
/// <item><term><see cref="StartTimeout"/></term><description>120 s (loading a large model onto a GPU, or a cold import of torch, can be slow)</description></item>
/// <item><term><see cref="ShutdownTimeout"/></term><description>5 s, then the process is killed</description></item>
/// <item><term><see cref="Prefork"/></term><description>false</description></item>
/// </list>
/// </remarks>
public sealed class WorkerOptions
{
    /// <summary>The command line that starts one worker.</summary>
    public required string Command { get; init; }

    /// <summary>Where workers start; null for the current directory.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>How long a worker may take to say hello (load its model).</summary>
    public TimeSpan StartTimeout { get; init; } = DefaultStartTimeout;

    /// <summary>The default <see cref="StartTimeout"/>: 120 s.</summary>
    public static TimeSpan DefaultStartTimeout { get; } = TimeSpan.FromSeconds(120);

    /// <summary>How long a worker may take to exit after shutdown before it is killed.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// This process's GPUs with their UUIDs (<see cref="NvmlDeviceInventory.GpuDetails"/>): a worker on <c>cuda:N</c>
    /// is pinned with <c>CUDA_VISIBLE_DEVICES=GPU-&lt;uuid&gt;</c>, the very card, whatever this process's own
    /// <c>CUDA_VISIBLE_DEVICES</c> is. Empty: the parent's entry for N, or N (<see cref="GpuNumbering.WorkerVisibleDevices"/>).
    /// </summary>
    public IReadOnlyList<GpuInfo> Gpus { get; init; } = [];

    /// <summary>
    /// Asks CPU workers to share one loaded model (<c>INFERPOOL_PREFORK=1</c> in their environment): the Python helper
    /// then loads once in a loader process and forks each replica from it, so the weights are shared copy-on-write
    /// and only the first replica waits for the load. Workers that do not use the helper ignore it; GPU replicas
    /// always load their own (CUDA cannot be forked).
    /// </summary>
    public bool Prefork { get; init; }

    /// <summary>Extra environment variables for every worker.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// The environment that keeps a worker to <paramref name="threads"/> threads: <c>OMP_NUM_THREADS</c> (read by
    /// PyTorch, NumPy's BLAS and ONNX Runtime) and <c>INFERPOOL_THREADS</c> (for the worker's own pools), so that CPU
    /// workers together do not oversubscribe the cores.
    /// </summary>
    /// <param name="threads">Threads per worker, at least 1.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="threads"/> is below 1.</exception>
    public static IReadOnlyDictionary<string, string> ThreadEnvironment(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        var text = threads.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return new Dictionary<string, string>(StringComparer.Ordinal) { ["OMP_NUM_THREADS"] = text, ["INFERPOOL_THREADS"] = text };
    }

    /// <summary>Each worker's share of the cores when <paramref name="workers"/> run on a machine of <paramref name="cores"/>: at least 1.</summary>
    /// <param name="cores">The machine's cores.</param>
    /// <param name="workers">Worker processes running at once.</param>
    public static int ThreadsPerWorker(int cores, int workers) => Math.Max(1, cores / Math.Max(1, workers));
}
