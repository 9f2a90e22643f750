using InferPool.Devices;

namespace InferPool.Diagnostics;

/// <summary>A change in a replica's life: started, faulted, removed.</summary>
/// <param name="Slot">The replica.</param>
/// <param name="Kind">What happened.</param>
/// <param name="Message">A sentence for people.</param>
/// <param name="Exception">The cause, if any.</param>
public sealed record ReplicaEvent(ReplicaSlot Slot, ReplicaEventKind Kind, string Message, Exception? Exception = null);
