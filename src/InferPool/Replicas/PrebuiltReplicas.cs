using InferPool.Devices;
using InferPool.Results;

namespace InferPool.Replicas;

/// <summary>
/// Replicas built before a measurement starts, so a timed run measures inference and not session builds.
/// The pool gets each slot's prebuilt replica once (disposing it only hands it back); a replica the pool
/// rebuilds after a fault comes from the inner factory as usual. Used to measure without build times, and to keep
/// replicas between the runs of a long-lived process (a cluster node running shard after shard).
/// </summary>
/// <typeparam name="TIn">The replicas' input.</typeparam>
/// <typeparam name="TOut">The replicas' output.</typeparam>
public sealed class PrebuiltReplicas<TIn, TOut> : IReplicaFactory<TIn, TOut>, IAsyncDisposable
{
    private readonly IReplicaFactory<TIn, TOut> _inner;
    private readonly Dictionary<string, IReplica<TIn, TOut>> _built;
    private readonly HashSet<string> _lent = new(StringComparer.Ordinal);

    private PrebuiltReplicas(IReplicaFactory<TIn, TOut> inner, Dictionary<string, IReplica<TIn, TOut>> built)
    {
        _inner = inner;
        _built = built;
    }

    /// <summary>Builds one replica per slot of <paramref name="plan"/>, one after another; on failure disposes what it built.</summary>
    internal static async Task<PrebuiltReplicas<TIn, TOut>> BuildAsync(IReplicaFactory<TIn, TOut> inner, ReplicaPlan plan, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(plan);
        var built = new Dictionary<string, IReplica<TIn, TOut>>(StringComparer.Ordinal);
        try
        {
            foreach (var slot in plan.Slots)
            {
                built[slot.Name] = await inner.CreateAsync(slot, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            foreach (var replica in built.Values)
            {
                await replica.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }

        return new PrebuiltReplicas<TIn, TOut>(inner, built);
    }

    /// <summary>Lets every prebuilt replica be handed out again (for the next run).</summary>
    public void Reset()
    {
        lock (_lent)
        {
            _lent.Clear();
        }
    }

    /// <inheritdoc/>
    public async ValueTask<IReplica<TIn, TOut>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(slot);
        lock (_lent)
        {
            if (_built.TryGetValue(slot.Name, out var replica) && _lent.Add(slot.Name))
            {
                return new Lent(replica);
            }
        }

        return await _inner.CreateAsync(slot, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Disposes the prebuilt replicas.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var replica in _built.Values)
        {
            await replica.DisposeAsync().ConfigureAwait(false);
        }

        _built.Clear();
    }

    /// <summary>A prebuilt replica as the pool sees it: disposing it keeps the replica for the next round.</summary>
    private sealed class Lent(IReplica<TIn, TOut> replica) : IReplica<TIn, TOut>
    {
        public ValueTask<IReadOnlyList<Outcome<TOut>>> InferAsync(IReadOnlyList<TIn> inputs, CancellationToken cancellationToken = default) =>
            replica.InferAsync(inputs, cancellationToken);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
