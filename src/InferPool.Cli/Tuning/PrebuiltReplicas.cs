using InferPool.Devices;
using InferPool.Replicas;
using InferPool.Results;

namespace InferPool.Cli.Tuning;

/// <summary>
/// Replicas built before a measurement starts, so a timed run measures inference and not session builds.
/// The pool gets each slot's prebuilt replica once (disposing it only hands it back); a replica the pool
/// rebuilds after a fault comes from the inner factory as usual.
/// </summary>
internal sealed class PrebuiltReplicas<TIn, TOut> : IReplicaFactory<TIn, TOut>, IAsyncDisposable
{
    private readonly IReplicaFactory<TIn, TOut> _inner;
    private readonly Dictionary<string, IReplica<TIn, TOut>> _built;
    private readonly HashSet<string> _lent = new(StringComparer.Ordinal);

    private PrebuiltReplicas(IReplicaFactory<TIn, TOut> inner, Dictionary<string, IReplica<TIn, TOut>> built)
    {
        _inner = inner;
        _built = built;
    }

    /// <summary>Builds one replica per slot of <paramref name="plan"/>, one after another.</summary>
    public static async Task<PrebuiltReplicas<TIn, TOut>> BuildAsync(IReplicaFactory<TIn, TOut> inner, ReplicaPlan plan, CancellationToken cancellationToken)
    {
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

    /// <summary>Lets every prebuilt replica be handed out again (for the next timed round).</summary>
    public void Reset()
    {
        lock (_lent)
        {
            _lent.Clear();
        }
    }

    public async ValueTask<IReplica<TIn, TOut>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default)
    {
        lock (_lent)
        {
            if (_built.TryGetValue(slot.Name, out var replica) && _lent.Add(slot.Name))
            {
                return new Lent(replica);
            }
        }

        return await _inner.CreateAsync(slot, cancellationToken).ConfigureAwait(false);
    }

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
