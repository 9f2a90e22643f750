using Microsoft.ML.OnnxRuntime;

namespace InferPool.Onnx;

/// <summary>How each ONNX Runtime replica is built.</summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>option</term><description>default</description></listheader>
/// <item><term><see cref="IntraOpThreads"/></term><description>null: CPU cores ÷ CPU replicas (at least 1), so replicas × threads never exceeds the cores; 1 on a GPU</description></item>
/// <item><term><see cref="OptimizationLevel"/></term><description><see cref="GraphOptimizationLevel.ORT_ENABLE_ALL"/></description></item>
/// <item><term><see cref="SharePrePackedWeights"/></term><description>true</description></item>
/// <item><term><see cref="Gpus"/></term><description>empty: CUDA sessions have no memory limit</description></item>
/// <item><term><see cref="GpuMemoryHeadroom"/></term><description>0.10</description></item>
/// <item><term><see cref="CpuCores"/></term><description><see cref="Environment.ProcessorCount"/></description></item>
/// </list>
/// </remarks>
public sealed class OnnxReplicaOptions
{
    /// <summary>Intra-op threads per session; null sizes them from the cores and the CPU replica count.</summary>
    public int? IntraOpThreads { get; set; }

    /// <summary>ONNX Runtime's graph optimisation level.</summary>
    public GraphOptimizationLevel OptimizationLevel { get; set; } = GraphOptimizationLevel.ORT_ENABLE_ALL;

    /// <summary>
    /// Share pre-packed weights across the CPU sessions of one factory (ONNX Runtime's
    /// <see cref="PrePackedWeightsContainer"/>), so N replicas do not hold N packed copies.
    /// </summary>
    public bool SharePrePackedWeights { get; set; } = true;

    /// <summary>
    /// The GPUs (with their total memory) that CUDA sessions may run on. With them, each CUDA session's arena is
    /// limited to its share of the card: total × (1 − <see cref="GpuMemoryHeadroom"/>) ÷ the replicas planned there,
    /// so that one session cannot take the whole card. Empty: no limit.
    /// </summary>
    public IReadOnlyList<Devices.GpuInfo> Gpus { get; set; } = [];

    /// <summary>The share of each GPU's memory kept free when limiting CUDA sessions (0.10).</summary>
    public double GpuMemoryHeadroom { get; set; } = 0.10;

    /// <summary>The cores that CPU replicas share; used to size <see cref="IntraOpThreads"/> when it is null.</summary>
    public int CpuCores { get; set; } = Environment.ProcessorCount;

    /// <summary>The intra-op threads a replica gets when it is one of <paramref name="cpuReplicas"/> on the CPU.</summary>
    public int ThreadsFor(int cpuReplicas) => IntraOpThreads ?? Math.Max(1, CpuCores / Math.Max(1, cpuReplicas));

    internal OnnxReplicaOptions Snapshot()
    {
        if (IntraOpThreads is < 1)
        {
            throw new ArgumentException($"OnnxReplicaOptions.IntraOpThreads is {IntraOpThreads}; it must be null (auto) or at least 1.", nameof(IntraOpThreads));
        }

        if (CpuCores < 1)
        {
            throw new ArgumentException($"OnnxReplicaOptions.CpuCores is {CpuCores}; it must be at least 1.", nameof(CpuCores));
        }

        return (OnnxReplicaOptions)MemberwiseClone();
    }
}
