using InferPool.Devices;
using InferPool.Images;

namespace InferPool.Jobs.Engines;

/// <summary>How an <see cref="EngineSession"/> runs.</summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>option</term><description>default</description></listheader>
/// <item><term><see cref="IntraOpThreads"/></term><description>null: the cores shared out among the CPU replicas</description></item>
/// <item><term><see cref="MaxPixels"/></term><description><see cref="ImagePreprocessor.DefaultMaxPixels"/></description></item>
/// <item><term><see cref="TensorCapacity"/></term><description>0: prepared arrays are not reused</description></item>
/// <item><term><see cref="KeepReplicas"/></term><description>false: each run builds its replicas and disposes them</description></item>
/// </list>
/// </remarks>
public sealed record EngineSessionOptions
{
    /// <summary>Threads per CPU replica (ONNX Runtime's intra-op threads; a worker's <c>OMP_NUM_THREADS</c>), or null for the default.</summary>
    public int? IntraOpThreads { get; init; }

    /// <summary>Images with more pixels are refused from their header, before decoding.</summary>
    public long MaxPixels { get; init; } = ImagePreprocessor.DefaultMaxPixels;

    /// <summary>
    /// How many prepared arrays may be idle for reuse: size it to what can be in flight (the pool's in-flight
    /// bound plus the preparation workers). 0 allocates each.
    /// </summary>
    public int TensorCapacity { get; init; }

    /// <summary>Enough idle arrays for everything the pool can hold at once: its in-flight bound plus the preparation workers.</summary>
    /// <param name="pool">The pool's options.</param>
    public static int TensorCapacityFor(InferencePoolOptions pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        return pool.EffectiveMaxInFlight + pool.PrepareParallelism;
    }

    /// <summary>This machine's GPUs with their memory, to limit each CUDA session to its share; empty for no limit.</summary>
    public IReadOnlyList<GpuInfo> Gpus { get; init; } = [];

    /// <summary>The share of each GPU's memory kept free (<see cref="JobDefaults.GpuHeadroom"/>).</summary>
    public double GpuHeadroom { get; init; } = JobDefaults.GpuHeadroom;

    /// <summary>
    /// Build the replicas at the first run and keep them for later runs of the session (a cluster node running
    /// shard after shard), instead of building and disposing them with each run.
    /// </summary>
    public bool KeepReplicas { get; init; }
}
