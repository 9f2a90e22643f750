namespace InferPool.Onnx;

/// <summary>What one ONNX Runtime replica took when it was built.</summary>
/// <param name="Replica">The replica's slot name, e.g. <c>cpu#0</c>.</param>
/// <param name="IntraOpThreads">Its intra-op threads.</param>
/// <param name="ResidentBytes">How much the process's resident memory grew while its session was built (freed heap pages given back first).</param>
public sealed record OnnxReplicaInfo(string Replica, int IntraOpThreads, long ResidentBytes)
{
    /// <summary>The session was built from the optimized graph an earlier session of this model saved in the cache folder (no graph optimization this time).</summary>
    public bool FromOptimizedGraph { get; init; }
}
