using InferPool.Results;

namespace InferPool.Replicas;

/// <summary>A replica around a model and an asynchronous infer delegate.</summary>
internal sealed class AsyncDelegateReplica<TIn, TModel, TOut>(
    TModel model,
    Func<TModel, IReadOnlyList<TIn>, CancellationToken, ValueTask<IReadOnlyList<TOut>>> infer) : IReplica<TIn, TOut>
{
    public async ValueTask<IReadOnlyList<Outcome<TOut>>> InferAsync(IReadOnlyList<TIn> inputs, CancellationToken cancellationToken = default)
    {
        var outputs = await infer(model, inputs, cancellationToken).ConfigureAwait(false);
        return ModelOutputs.ToOutcomes(outputs, inputs.Count);
    }

    public ValueTask DisposeAsync() => ModelOutputs.DisposeModelAsync(model);
}
