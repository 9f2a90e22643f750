using System.Runtime.CompilerServices;
using InferPool.Devices;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Parts;
using InferPool.Onnx.Tensors;
using InferPool.Replicas;
using InferPool.Results;

namespace InferPool.Jobs.Engines;

/// <summary>
/// The one session every engine uses: a replica factory, a preparation and a row conversion, with replicas kept
/// between runs when asked.
/// </summary>
internal sealed class PooledSession<TPrepared, TOutput> : EngineSession
{
    private readonly IReplicaFactory<TPrepared, TOutput> _factory;
    private readonly PrepareStage<InputItem, TPrepared> _prepare;
    private readonly Func<InferenceResult<InputItem, TOutput>, ResultRow> _toRow;
    private readonly Func<IReadOnlyList<ReplicaUsage>> _usage;
    private readonly Action? _dispose;
    private readonly bool _keep;
    private PrebuiltReplicas<TPrepared, TOutput>? _kept;

    public PooledSession(
        IReplicaFactory<TPrepared, TOutput> factory,
        Func<InputItem, TPrepared> prepare,
        Action<TPrepared>? release,
        Func<InferenceResult<InputItem, TOutput>, ResultRow> toRow,
        Func<IReadOnlyList<ReplicaUsage>> usage,
        bool keepReplicas,
        Action? dispose = null)
    {
        _factory = factory;
        // An unusable input (a malformed record) fails in preparation, alone, with its reason.
        _prepare = new PrepareStage<InputItem, TPrepared>((item, _) => item.Error is null ? ValueTask.FromResult(prepare(item)) : throw new InvalidDataException(item.Error))
        {
            Release = release,
        };
        _toRow = toRow;
        _usage = usage;
        _keep = keepReplicas;
        _dispose = dispose;
    }

    public override IReadOnlyList<ReplicaUsage> Replicas => _usage();

    public override async Task StartAsync(ReplicaPlan plan, CancellationToken cancellationToken = default)
    {
        if (_keep)
        {
            _kept ??= await ReplicaFactory.PrebuildAsync(_factory, plan, cancellationToken).ConfigureAwait(false);
        }
    }

    public override async IAsyncEnumerable<ResultRow> RunAsync(IAsyncEnumerable<InputItem> items, InferencePoolOptions options, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        IReplicaFactory<TPrepared, TOutput> factory = _factory;
        if (_keep)
        {
            await StartAsync(options.Replicas, cancellationToken).ConfigureAwait(false);
            _kept!.Reset();
            factory = _kept;
        }

        await foreach (var result in InferencePool.RunAsync(items, _prepare, factory, options, cancellationToken).ConfigureAwait(false))
        {
            yield return _toRow(result);
        }
    }

    public override async ValueTask DisposeAsync()
    {
        if (_kept is not null)
        {
            await _kept.DisposeAsync().ConfigureAwait(false);
            _kept = null;
        }

        _dispose?.Invoke();
    }

    /// <summary>The row of a result whose outputs are already float vectors (or that failed).</summary>
    public static ResultRow Row<T>(in InferenceResult<InputItem, T> result, IReadOnlyList<float[]>? outputs, string? json = null) =>
        Row(result, outputs?.Select(o => TensorData.Create(o, o.Length)).ToArray(), json);

    /// <summary>The row of a result with its output tensors (or that failed).</summary>
    public static ResultRow Row<T>(in InferenceResult<InputItem, T> result, IReadOnlyList<TensorData>? outputs, string? json = null, bool truncated = false) => new()
    {
        Key = result.Item.Key,
        Index = result.Index,
        Ok = result.IsSuccess,
        Error = result.Error?.ToString(),
        ErrorType = result.Error?.Type,
        Outputs = result.IsSuccess ? outputs : null,
        Json = result.IsSuccess ? json : null,
        Device = result.Device?.ToString(),
        Replica = result.Replica?.Name,
        Attempts = result.Attempts,
        Truncated = truncated,
    };
}
