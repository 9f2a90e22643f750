using InferPool.Devices;

namespace InferPool.Replicas;

/// <summary>Builds <see cref="IReplicaFactory{TIn, TOut}"/> instances from plain delegates.</summary>
public static class ReplicaFactory
{
    /// <summary>
    /// Replicas for blocking model code (most inference calls block). Each replica gets a dedicated thread
    /// that builds the model, runs every batch and disposes the model, so replicas never starve the thread
    /// pool and a model with thread affinity (a CUDA context) always sees the same thread.
    /// </summary>
    /// <param name="createModel">Loads one model for a slot; called on the replica's thread.</param>
    /// <param name="infer">Runs the model on a batch and returns one output per input, in order.</param>
    /// <remarks>The model is disposed when it implements <see cref="IDisposable"/> or <see cref="IAsyncDisposable"/>.</remarks>
    public static IReplicaFactory<TIn, TOut> FromBlocking<TIn, TModel, TOut>(
        Func<ReplicaSlot, TModel> createModel,
        Func<TModel, IReadOnlyList<TIn>, CancellationToken, IReadOnlyList<TOut>> infer)
    {
        ArgumentNullException.ThrowIfNull(createModel);
        ArgumentNullException.ThrowIfNull(infer);
        return new BlockingFactory<TIn, TModel, TOut>(createModel, infer);
    }

    /// <summary>Replicas for asynchronous model code (a remote call, an async runtime).</summary>
    /// <param name="createModel">Loads one model for a slot.</param>
    /// <param name="infer">Runs the model on a batch and returns one output per input, in order.</param>
    /// <remarks>The model is disposed when it implements <see cref="IDisposable"/> or <see cref="IAsyncDisposable"/>.</remarks>
    public static IReplicaFactory<TIn, TOut> FromAsync<TIn, TModel, TOut>(
        Func<ReplicaSlot, CancellationToken, ValueTask<TModel>> createModel,
        Func<TModel, IReadOnlyList<TIn>, CancellationToken, ValueTask<IReadOnlyList<TOut>>> infer)
    {
        ArgumentNullException.ThrowIfNull(createModel);
        ArgumentNullException.ThrowIfNull(infer);
        return new AsyncFactory<TIn, TModel, TOut>(createModel, infer);
    }

    private sealed class BlockingFactory<TIn, TModel, TOut>(
        Func<ReplicaSlot, TModel> createModel,
        Func<TModel, IReadOnlyList<TIn>, CancellationToken, IReadOnlyList<TOut>> infer) : IReplicaFactory<TIn, TOut>
    {
        public ValueTask<IReplica<TIn, TOut>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default) =>
            DedicatedThreadReplica<TIn, TModel, TOut>.StartAsync(slot, createModel, infer, cancellationToken);
    }

    private sealed class AsyncFactory<TIn, TModel, TOut>(
        Func<ReplicaSlot, CancellationToken, ValueTask<TModel>> createModel,
        Func<TModel, IReadOnlyList<TIn>, CancellationToken, ValueTask<IReadOnlyList<TOut>>> infer) : IReplicaFactory<TIn, TOut>
    {
        public async ValueTask<IReplica<TIn, TOut>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default)
        {
            var model = await createModel(slot, cancellationToken).ConfigureAwait(false);
            return new AsyncDelegateReplica<TIn, TModel, TOut>(model, infer);
        }
    }

    /// <summary>
    /// Builds one replica per slot of <paramref name="plan"/> now, one after another, and hands each to the pool once
    /// when it asks (rebuilds after faults come from <paramref name="inner"/>). On failure disposes what it built.
    /// </summary>
    /// <typeparam name="TIn">The replicas' input.</typeparam>
    /// <typeparam name="TOut">The replicas' output.</typeparam>
    /// <param name="inner">The factory that builds them.</param>
    /// <param name="plan">Replicas per device.</param>
    /// <param name="cancellationToken">Stops the building.</param>
    public static Task<PrebuiltReplicas<TIn, TOut>> PrebuildAsync<TIn, TOut>(IReplicaFactory<TIn, TOut> inner, ReplicaPlan plan, CancellationToken cancellationToken = default) =>
        PrebuiltReplicas<TIn, TOut>.BuildAsync(inner, plan, cancellationToken);
}
