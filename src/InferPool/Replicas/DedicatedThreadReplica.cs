using System.Collections.Concurrent;
using InferPool.Devices;
using InferPool.Results;

namespace InferPool.Replicas;

/// <summary>
/// A replica for blocking model code: one dedicated thread builds the model, runs every batch and disposes
/// the model. A call that hangs keeps only this thread; the pool abandons it and builds a new replica.
/// </summary>
internal sealed class DedicatedThreadReplica<TIn, TModel, TOut> : IReplica<TIn, TOut>
{
    private readonly BlockingCollection<Action> _work = new();
    private readonly Func<TModel, IReadOnlyList<TIn>, CancellationToken, IReadOnlyList<TOut>> _infer;
    private TModel? _model;
    private int _disposed;

    private DedicatedThreadReplica(ReplicaSlot slot, Func<TModel, IReadOnlyList<TIn>, CancellationToken, IReadOnlyList<TOut>> infer)
    {
        _infer = infer;
        var thread = new Thread(Run)
        {
            IsBackground = true,
            Name = $"inferpool {slot.Name}",
        };
        thread.Start();
    }

    public static async ValueTask<IReplica<TIn, TOut>> StartAsync(
        ReplicaSlot slot,
        Func<ReplicaSlot, TModel> createModel,
        Func<TModel, IReadOnlyList<TIn>, CancellationToken, IReadOnlyList<TOut>> infer,
        CancellationToken cancellationToken)
    {
        var replica = new DedicatedThreadReplica<TIn, TModel, TOut>(slot, infer);
        try
        {
            await replica.OnThreadAsync(() => replica._model = createModel(slot), cancellationToken).ConfigureAwait(false);
            return replica;
        }
        catch
        {
            // Cancelled while the model was loading: the load still finishes on the thread, and the disposal
            // queued behind it releases what it built.
            await replica.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async ValueTask<IReadOnlyList<Outcome<TOut>>> InferAsync(IReadOnlyList<TIn> inputs, CancellationToken cancellationToken = default)
    {
        var model = _model!;
        var outputs = await OnThreadAsync(() => _infer(model, inputs, cancellationToken), cancellationToken).ConfigureAwait(false);
        return ModelOutputs.ToOutcomes(outputs, inputs.Count);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // Queued behind any call still running, on the model's own thread; the pool bounds how long it waits.
        try
        {
            await OnThreadAsync(
                () =>
                {
                    if (_model is { } model)
                    {
                        ModelOutputs.DisposeModelAsync(model).AsTask().GetAwaiter().GetResult();
                    }
                },
                CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            _work.CompleteAdding();
        }
    }

    private Task<T> OnThreadAsync<T>(Func<T> func, CancellationToken cancellationToken)
    {
        // Continuations run inline on this replica's thread: the pool's loop for this replica then emits the
        // results and hands in the next batch without a hop through the thread pool, which on a machine whose
        // cores are all busy with replicas would leave the replica idle until a pool thread got a time slice.
        var tcs = new TaskCompletionSource<T>();
        _work.Add(() =>
        {
            try
            {
                tcs.TrySetResult(func());
            }
            catch (OperationCanceledException oce) when (cancellationToken.IsCancellationRequested)
            {
                tcs.TrySetCanceled(oce.CancellationToken);
            }
            catch (Exception ex)
            {
                tcs.TrySetException(ex);
            }
        }, CancellationToken.None);
        return tcs.Task.WaitAsync(cancellationToken);
    }

    private Task<bool> OnThreadAsync(Action action, CancellationToken cancellationToken) =>
        OnThreadAsync(() =>
        {
            action();
            return true;
        }, cancellationToken);

    private void Run()
    {
        foreach (var action in _work.GetConsumingEnumerable())
        {
            action();
        }

        _work.Dispose();
    }
}
