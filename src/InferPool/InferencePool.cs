using InferPool.Devices;
using InferPool.Replicas;
using InferPool.Results;
using InferPool.Scheduling;

namespace InferPool;

/// <summary>
/// Runs a model over a sequence of inputs on every replica of every device at once, and streams the
/// results back. The entry point of the library.
/// </summary>
/// <remarks>
/// <para>The input is read lazily and at most <see cref="InferencePoolOptions.MaxInFlight"/> items are in the
/// pool at any time, so any input size runs in bounded memory. Replicas pull batches from one shared queue:
/// a fast device simply takes more.</para>
/// <para>An item that fails yields a failed result (<see cref="InferenceResult{TIn, TOut}.Error"/>); the job
/// goes on. The stream throws <see cref="InferencePoolException"/> only when the job as a whole cannot go on,
/// after every result that finished before.</para>
/// <para>To stop gracefully (finish what is in flight, then end) stop the input sequence; to stop now,
/// cancel the token: in-flight work is abandoned within <see cref="InferencePoolOptions.DrainTimeout"/> and
/// every replica is disposed.</para>
/// </remarks>
public static class InferencePool
{
    /// <summary>
    /// Runs blocking model code over the inputs: one model per replica slot, each on its own thread.
    /// </summary>
    /// <typeparam name="TIn">The input item type.</typeparam>
    /// <typeparam name="TModel">The model type; disposed at the end when it is disposable.</typeparam>
    /// <typeparam name="TOut">The per-item output type.</typeparam>
    /// <param name="inputs">The inputs; enumerated lazily, once.</param>
    /// <param name="createModel">Loads a model for a replica slot; called once per replica.</param>
    /// <param name="infer">Runs a model on a batch; returns one output per input, in order.</param>
    /// <param name="options">How to run; null for the defaults (one CPU replica, no batching).</param>
    /// <param name="cancellationToken">Stops the job now.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static IAsyncEnumerable<InferenceResult<TIn, TOut>> RunAsync<TIn, TModel, TOut>(
        IEnumerable<TIn> inputs,
        Func<ReplicaSlot, TModel> createModel,
        Func<TModel, IReadOnlyList<TIn>, CancellationToken, IReadOnlyList<TOut>> infer,
        InferencePoolOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        return RunAsync(inputs.ToAsyncEnumerable(), ReplicaFactory.FromBlocking(createModel, infer), options, cancellationToken);
    }

    /// <summary>Runs replicas built by <paramref name="factory"/> over the inputs.</summary>
    /// <typeparam name="TIn">The input item type.</typeparam>
    /// <typeparam name="TOut">The per-item output type.</typeparam>
    /// <param name="inputs">The inputs; enumerated lazily, once.</param>
    /// <param name="factory">Builds one replica per slot (see <see cref="ReplicaFactory"/>).</param>
    /// <param name="options">How to run; null for the defaults.</param>
    /// <param name="cancellationToken">Stops the job now.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static IAsyncEnumerable<InferenceResult<TIn, TOut>> RunAsync<TIn, TOut>(
        IAsyncEnumerable<TIn> inputs,
        IReplicaFactory<TIn, TOut> factory,
        InferencePoolOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(factory);
        var snapshot = (options ?? new InferencePoolOptions()).ValidateAndSnapshot();
        return new PoolRun<TIn, TIn, TOut>(inputs, null, null, factory, snapshot).RunAsync(cancellationToken);
    }

    /// <summary>
    /// Runs a prepare stage (decode, resize, …) on <see cref="InferencePoolOptions.PrepareParallelism"/> CPU
    /// workers, overlapping inference, then replicas built by <paramref name="factory"/> over the prepared items.
    /// </summary>
    /// <typeparam name="TIn">The input item type (kept as the result's key).</typeparam>
    /// <typeparam name="TPrepared">What the replicas take.</typeparam>
    /// <typeparam name="TOut">The per-item output type.</typeparam>
    /// <param name="inputs">The inputs; enumerated lazily, once.</param>
    /// <param name="prepare">Turns an input into model input; an exception fails that item only (stage <see cref="FailureStage.Prepare"/>).</param>
    /// <param name="factory">Builds one replica per slot.</param>
    /// <param name="options">How to run; null for the defaults.</param>
    /// <param name="cancellationToken">Stops the job now.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static IAsyncEnumerable<InferenceResult<TIn, TOut>> RunAsync<TIn, TPrepared, TOut>(
        IAsyncEnumerable<TIn> inputs,
        Func<TIn, CancellationToken, ValueTask<TPrepared>> prepare,
        IReplicaFactory<TPrepared, TOut> factory,
        InferencePoolOptions? options = null,
        CancellationToken cancellationToken = default) =>
        RunAsync(inputs, new PrepareStage<TIn, TPrepared>(prepare), factory, options, cancellationToken);

    /// <summary>
    /// Runs a prepare stage, with its options (such as returning prepared buffers to a pool), then replicas
    /// built by <paramref name="factory"/> over the prepared items.
    /// </summary>
    /// <typeparam name="TIn">The input item type (kept as the result's key).</typeparam>
    /// <typeparam name="TPrepared">What the replicas take.</typeparam>
    /// <typeparam name="TOut">The per-item output type.</typeparam>
    /// <param name="inputs">The inputs; enumerated lazily, once.</param>
    /// <param name="prepare">The prepare stage.</param>
    /// <param name="factory">Builds one replica per slot.</param>
    /// <param name="options">How to run; null for the defaults.</param>
    /// <param name="cancellationToken">Stops the job now.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static IAsyncEnumerable<InferenceResult<TIn, TOut>> RunAsync<TIn, TPrepared, TOut>(
        IAsyncEnumerable<TIn> inputs,
        PrepareStage<TIn, TPrepared> prepare,
        IReplicaFactory<TPrepared, TOut> factory,
        InferencePoolOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(prepare);
        ArgumentNullException.ThrowIfNull(factory);
        var snapshot = (options ?? new InferencePoolOptions()).ValidateAndSnapshot();
        return new PoolRun<TIn, TPrepared, TOut>(inputs, prepare.Prepare, prepare.Release, factory, snapshot).RunAsync(cancellationToken);
    }
}
