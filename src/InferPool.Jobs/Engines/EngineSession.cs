using InferPool.Jobs.Inputs;
using InferPool.Jobs.Parts;

namespace InferPool.Jobs.Engines;

/// <summary>
/// An engine opened for running: takes input items through the pool (preparation, batching, replicas) and gives a
/// result row per item, in the order the pool options ask for. Disposing it disposes the replicas it kept.
/// </summary>
public abstract class EngineSession : IAsyncDisposable
{
    /// <summary>What each replica took so far, for a summary.</summary>
    public abstract IReadOnlyList<ReplicaUsage> Replicas { get; }

    /// <summary>Runs <paramref name="items"/>; an unusable item gives a failed row with the reason, never an exception.</summary>
    /// <param name="items">The items, read lazily.</param>
    /// <param name="options">The pool's options (replicas, batch size, order, monitor, …).</param>
    /// <param name="cancellationToken">Stops now: in-flight items are abandoned.</param>
    /// <exception cref="InferencePoolException">No replica could start, or the input could not be read.</exception>
    public abstract IAsyncEnumerable<ResultRow> RunAsync(IAsyncEnumerable<InputItem> items, InferencePoolOptions options, CancellationToken cancellationToken = default);

    /// <summary>
    /// Builds the replicas of <paramref name="plan"/> now, for a session that keeps its replicas
    /// (<see cref="EngineSessionOptions.KeepReplicas"/>), so that a replica that cannot start fails here, before any
    /// item is taken. A session that builds replicas per run does nothing.
    /// </summary>
    /// <param name="plan">Replicas per device; later runs use the same plan.</param>
    /// <param name="cancellationToken">Stops the building.</param>
    /// <exception cref="InvalidOperationException">A replica could not start (a worker exited, a model did not load).</exception>
    public abstract Task StartAsync(Devices.ReplicaPlan plan, CancellationToken cancellationToken = default);

    /// <inheritdoc/>
    public abstract ValueTask DisposeAsync();
}
