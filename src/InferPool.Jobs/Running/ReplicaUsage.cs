namespace InferPool.Jobs;

/// <summary>What one replica took, for the summary.</summary>
/// <param name="Replica">The replica's slot name, e.g. <c>cpu#0</c>.</param>
/// <param name="Detail">Threads of an ONNX Runtime session, or a worker's process id.</param>
/// <param name="ResidentBytes">Its resident memory (a session's growth of this process, a worker's own process tree), or null where unknown.</param>
public sealed record ReplicaUsage(string Replica, string Detail, long? ResidentBytes);
