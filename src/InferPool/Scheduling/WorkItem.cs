namespace InferPool.Scheduling;

/// <summary>One admitted item on its way through the pool.</summary>
internal struct WorkItem<TIn, TPrepared>
{
    public long Index;
    public TIn Item;
    public TPrepared Prepared;

    /// <summary>Failures charged to this item (it was alone in a call that failed).</summary>
    public int Failures;

    /// <summary>When it was admitted, for the latency histogram.</summary>
    public long AdmittedAt;
}

/// <summary>A batch in the queue. <see cref="HoldsSlot"/> is true for fresh batches, which count against the queue bound; retried parts do not.</summary>
internal sealed class WorkBatch<TIn, TPrepared>(WorkItem<TIn, TPrepared>[] items, bool holdsSlot)
{
    public WorkItem<TIn, TPrepared>[] Items { get; } = items;

    public bool HoldsSlot { get; set; } = holdsSlot;
}
