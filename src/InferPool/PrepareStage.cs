namespace InferPool;

/// <summary>
/// The prepare stage of a job: a per-item transform (decode, resize, tokenise) run on
/// <see cref="InferencePoolOptions.PrepareParallelism"/> CPU workers, overlapping inference.
/// </summary>
/// <typeparam name="TIn">The input item type.</typeparam>
/// <typeparam name="TPrepared">What the replicas take.</typeparam>
public sealed class PrepareStage<TIn, TPrepared>
{
    /// <summary>Creates a prepare stage.</summary>
    /// <param name="prepare">Turns an input into model input; an exception fails that item only.</param>
    /// <exception cref="ArgumentNullException"><paramref name="prepare"/> is null.</exception>
    public PrepareStage(Func<TIn, CancellationToken, ValueTask<TPrepared>> prepare)
    {
        ArgumentNullException.ThrowIfNull(prepare);
        Prepare = prepare;
    }

    /// <summary>The transform.</summary>
    public Func<TIn, CancellationToken, ValueTask<TPrepared>> Prepare { get; }

    /// <summary>
    /// Called once with each prepared value when its item's result is final (it will not be retried), so
    /// large buffers can go back to a pool instead of to the garbage collector. Null for none.
    /// </summary>
    /// <remarks>Not called for items abandoned by cancellation; those are left to the garbage collector.</remarks>
    public Action<TPrepared>? Release { get; init; }
}
