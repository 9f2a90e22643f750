using InferPool.Results;

namespace InferPool.Replicas;

/// <summary>Turns a delegate's list of outputs into per-item outcomes, checking that the counts agree.</summary>
internal static class ModelOutputs
{
    public static IReadOnlyList<Outcome<TOut>> ToOutcomes<TOut>(IReadOnlyList<TOut>? outputs, int inputCount)
    {
        if (outputs is null || outputs.Count != inputCount)
        {
            throw new InvalidOperationException(
                $"The model returned {outputs?.Count.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "null"} outputs for a batch of {inputCount} inputs; it must return exactly one output per input, in order.");
        }

        var outcomes = new Outcome<TOut>[inputCount];
        for (var i = 0; i < outcomes.Length; i++)
        {
            outcomes[i] = Outcome<TOut>.Success(outputs[i]);
        }

        return outcomes;
    }

    public static async ValueTask DisposeModelAsync<TModel>(TModel model)
    {
        switch (model)
        {
            case IAsyncDisposable asyncDisposable:
                await asyncDisposable.DisposeAsync().ConfigureAwait(false);
                break;
            case IDisposable disposable:
                disposable.Dispose();
                break;
        }
    }
}
