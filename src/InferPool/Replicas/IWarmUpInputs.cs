namespace InferPool.Replicas;

/// <summary>
/// A replica factory that can make placeholder inputs. Before the pool measures how much GPU memory a new replica
/// takes (to cap the replicas per GPU, <see cref="InferencePoolOptions.GpuTelemetry"/>), it runs one full batch of
/// them through the replica, so that the measurement includes a full batch's working memory (activations,
/// workspaces) rather than whatever the first real batch, often of one or two items, needed.
/// </summary>
/// <typeparam name="TIn">The replica's input type.</typeparam>
public interface IWarmUpInputs<TIn>
{
    /// <summary>A batch of <paramref name="batchSize"/> placeholder inputs (zeros), or null when this factory cannot size one (an input whose size varies).</summary>
    /// <param name="batchSize">Items in the batch, at least 1.</param>
    IReadOnlyList<TIn>? WarmUpBatch(int batchSize);
}
