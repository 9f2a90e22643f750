using InferPool.Devices;

namespace InferPool.Replicas;

/// <summary>
/// Builds replicas. Called once per replica slot, and again to rebuild a replica after a fault, so each
/// replica owns what it loads: nothing is pickled, shared or captured by accident.
/// </summary>
/// <typeparam name="TIn">The (prepared) input type.</typeparam>
/// <typeparam name="TOut">The per-item output type.</typeparam>
public interface IReplicaFactory<TIn, TOut>
{
    /// <summary>Builds the replica for a slot.</summary>
    /// <param name="slot">The device and replica number.</param>
    /// <param name="cancellationToken">Signalled when the job is cancelled.</param>
    /// <remarks>A factory that fails halfway disposes what it built before it throws.</remarks>
    ValueTask<IReplica<TIn, TOut>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default);
}
