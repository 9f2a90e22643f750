namespace InferPool.Processes;

/// <summary>One started worker process, as it was once it said hello (its model loaded).</summary>
/// <param name="Replica">The replica's slot name, e.g. <c>cuda:0#1</c>.</param>
/// <param name="Name">The name the worker gave in its hello.</param>
/// <param name="ProcessId">The process id of the worker's shell.</param>
/// <param name="ResidentBytes">
/// Memory of the worker and its child processes after its hello, as their proportional set size (each shared page
/// divided among the processes that share it, so that pre-forked replicas are not counted as if each held its own
/// copy of the model), or null where it cannot be read.
/// </param>
public sealed record WorkerInfo(string Replica, string Name, int ProcessId, long? ResidentBytes);
