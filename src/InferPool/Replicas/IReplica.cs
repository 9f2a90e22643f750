using InferPool.Results;

namespace InferPool.Replicas;

/// <summary>
/// One loaded copy of a model bound to one device. The pool calls it with one batch at a time, never
/// concurrently, and disposes it when the job ends or the replica is found broken.
/// </summary>
/// <typeparam name="TIn">The (prepared) input type.</typeparam>
/// <typeparam name="TOut">The per-item output type.</typeparam>
public interface IReplica<TIn, TOut> : IAsyncDisposable
{
    /// <summary>Runs the model on a batch.</summary>
    /// <param name="inputs">The batch, 1 to <see cref="InferencePoolOptions.MaxBatchSize"/> items.</param>
    /// <param name="cancellationToken">Signalled when the job is cancelled or the batch timed out.</param>
    /// <returns>One outcome per input, in the same order.</returns>
    /// <remarks>
    /// Throwing fails the batch: the pool splits it to find the bad item (see
    /// <see cref="InferencePoolOptions.ClassifyFault"/>). Throw <see cref="ReplicaFaultException"/> when the
    /// replica itself is broken (its process died, its device failed): the pool disposes and rebuilds it and
    /// retries the batch elsewhere.
    /// </remarks>
    ValueTask<IReadOnlyList<Outcome<TOut>>> InferAsync(IReadOnlyList<TIn> inputs, CancellationToken cancellationToken = default);
}
