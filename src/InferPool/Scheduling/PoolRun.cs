using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using InferPool.Devices;
using InferPool.Diagnostics;
using InferPool.Replicas;
using InferPool.Results;
using Microsoft.Extensions.Logging;

namespace InferPool.Scheduling;

/// <summary>
/// One job: reader → prepare workers → batcher → shared batch queue → replica workers → results.
/// Every queue is bounded by the admission semaphore (items admitted and not yet handed to the caller), so
/// memory does not depend on the input size. Replicas pull batches; nothing is assigned to a busy device.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage(
    "Reliability",
    "CA1001:Types that own disposable fields should be disposable",
    Justification = "The semaphores never allocate wait handles and the token source has no timer; stages abandoned after the drain timeout may still touch them, so they are left to the GC.")]
internal sealed partial class PoolRun<TIn, TPrepared, TOut>
{
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(10);

    private readonly IAsyncEnumerable<TIn> _source;
    private readonly Func<TIn, CancellationToken, ValueTask<TPrepared>>? _prepare;
    private readonly Action<TPrepared>? _release;
    private readonly IReplicaFactory<TPrepared, TOut> _factory;
    private readonly InferencePoolOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _log;
    private readonly PoolMonitor? _monitor;
    private readonly Func<Exception, FaultKind> _classify;
    private readonly CancellationTokenSource _cts = new();
    private readonly SemaphoreSlim _admission;
    private readonly SemaphoreSlim _batchSlots;
    private readonly Channel<WorkItem<TIn, TPrepared>>? _toPrepare;
    private readonly Channel<WorkItem<TIn, TPrepared>> _ready;
    private readonly Channel<WorkBatch<TIn, TPrepared>> _batches;
    private readonly Channel<InferenceResult<TIn, TOut>[]> _results;
    private readonly Lock _slotLock = new();
    private readonly Dictionary<Device, int> _liveSlotsPerDevice = [];
    private readonly List<string> _removalReasons = [];
    private readonly Dictionary<Device, GpuCapGate> _gpuGates = [];
    private readonly PrepareWorkers? _prepareWorkers;
    private int _liveSlots;

    // Admitted items not yet written to the results channel, plus one held by the reader until the input ends.
    private long _outstanding = 1;
    private long _admittedCount;

    // What this job has added to the process-wide in-flight and queue-depth gauges, to take back on cancel.
    private long _inFlight;
    private long _queued;
    private Exception? _sourceError;

    public PoolRun(
        IAsyncEnumerable<TIn> source,
        Func<TIn, CancellationToken, ValueTask<TPrepared>>? prepare,
        Action<TPrepared>? release,
        IReplicaFactory<TPrepared, TOut> factory,
        InferencePoolOptions options)
    {
        _source = source;
        _prepare = prepare;
        _release = release;
        _factory = factory;
        _options = options;
        _time = options.TimeProvider;
        _log = options.Logger;
        _monitor = options.Monitor;
        _classify = options.ClassifyFault!;
        _admission = new SemaphoreSlim(options.MaxInFlight!.Value);
        _batchSlots = new SemaphoreSlim(options.Replicas.TotalReplicas);
        var readyCapacity = Math.Max(2 * options.MaxBatchSize, 16);
        if (prepare is not null)
        {
            _toPrepare = Channel.CreateBounded<WorkItem<TIn, TPrepared>>(new BoundedChannelOptions(Math.Max(2 * options.PrepareParallelism, 4))
            {
                SingleWriter = true,
            });
            _prepareWorkers = new PrepareWorkers(options.PrepareParallelism);
        }

        _ready = Channel.CreateBounded<WorkItem<TIn, TPrepared>>(new BoundedChannelOptions(readyCapacity)
        {
            SingleWriter = prepare is null,
        });
        _batches = Channel.CreateUnbounded<WorkBatch<TIn, TPrepared>>();
        _results = Channel.CreateUnbounded<InferenceResult<TIn, TOut>[]>(new UnboundedChannelOptions { SingleReader = true });
        foreach (var allocation in options.Replicas.Devices)
        {
            _liveSlotsPerDevice[allocation.Device] = allocation.Replicas;
            if (options.GpuTelemetry is not null && allocation.Device.IsGpu && allocation.Replicas > 1)
            {
                _gpuGates[allocation.Device] = new GpuCapGate();
            }
        }

        _liveSlots = options.Replicas.TotalReplicas;
    }

    private CancellationToken Token => _cts.Token;

    /// <summary>Runs the job and streams its results; disposing the enumerator cancels and cleans up.</summary>
    public async IAsyncEnumerable<InferenceResult<TIn, TOut>> RunAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var link = cancellationToken.Register(static s => ((CancellationTokenSource)s!).Cancel(), _cts);
        _monitor?.Start(_options.Replicas, _prepareWorkers is { } workers ? () => SnapshotPreparation(workers) : null);
        var tasks = StartStages();
        try
        {
            var reader = _results.Reader;
            if (_options.Order == ResultOrder.Completion)
            {
                while (await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    while (reader.TryRead(out var batch))
                    {
                        foreach (var result in batch)
                        {
                            yield return result;
                            Release(result);
                        }
                    }
                }
            }
            else
            {
                var window = new InferenceResult<TIn, TOut>[_options.MaxInFlight!.Value];
                var present = new bool[window.Length];
                long next = 0;
                while (await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    while (reader.TryRead(out var batch))
                    {
                        foreach (var result in batch)
                        {
                            var at = (int)(result.Index % window.Length);
                            window[at] = result;
                            present[at] = true;
                        }

                        var head = (int)(next % window.Length);
                        while (present[head])
                        {
                            var result = window[head];
                            window[head] = default;
                            present[head] = false;
                            next++;
                            head = (int)(next % window.Length);
                            yield return result;
                            Release(result);
                        }
                    }
                }
            }
        }
        finally
        {
            await StopAsync(tasks).ConfigureAwait(false);
        }
    }

    private Task[] StartStages()
    {
        // Replicas first, through the pool's shared queue: building them is the long pole of a job's start, and queued
        // behind the prepare workers (which keep a thread while the queue ahead of them has room) they started up to
        // ~150 ms late on two cores. Preparation overlaps with the builds either way.
        var tasks = new List<Task>();
        foreach (var slot in _options.Replicas.Slots)
        {
            tasks.Add(Task.Factory.StartNew(() => ReplicaLoopAsync(slot), CancellationToken.None, TaskCreationOptions.PreferFairness | TaskCreationOptions.DenyChildAttach, TaskScheduler.Default).Unwrap());
        }

        tasks.Add(Task.Run(ReadInputAsync));
        if (_prepare is not null)
        {
            tasks.Add(Task.Run(PrepareStageAsync));
        }

        tasks.Add(Task.Run(BatchAsync));
        return [.. tasks];
    }

    private async Task StopAsync(Task[] tasks)
    {
        await _cts.CancelAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll(tasks).WaitAsync(_options.DrainTimeout, _time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            LogAbandoned(_log, _options.DrainTimeout);
        }
        finally
        {
            // Whatever a stopped job leaves admitted or queued no longer counts in the process-wide gauges.
            // Taken once every stage has stopped, so no stage changes the counts afterwards.
            InferPoolMetrics.InFlight.Add(-Interlocked.Exchange(ref _inFlight, 0));
            InferPoolMetrics.QueueDepth.Add(-Interlocked.Exchange(ref _queued, 0));
        }
    }

    private void Release(in InferenceResult<TIn, TOut> result)
    {
        _monitor?.Released(result.IsSuccess);
        Interlocked.Decrement(ref _inFlight);
        InferPoolMetrics.InFlight.Add(-1);
        _admission.Release();
    }

    // ---- input ----------------------------------------------------------------------------------------

    private async Task ReadInputAsync()
    {
        var writer = _toPrepare?.Writer ?? _ready.Writer;
        long index = 0;
        try
        {
            await foreach (var input in _source.WithCancellation(Token).ConfigureAwait(false))
            {
                var item = input;
                await _admission.WaitAsync(Token).ConfigureAwait(false);
                Interlocked.Increment(ref _outstanding);
                _monitor?.Admitted();
                Interlocked.Increment(ref _inFlight);
                InferPoolMetrics.InFlight.Add(1);
                var work = new WorkItem<TIn, TPrepared>
                {
                    Index = index++,
                    Item = item,
                    Prepared = _prepare is null ? Unsafe.As<TIn, TPrepared>(ref item) : default!,
                    AdmittedAt = InferPoolMetrics.ItemLatency.Enabled ? Stopwatch.GetTimestamp() : 0,
                };
                if (!writer.TryWrite(work))
                {
                    await writer.WriteAsync(work, Token).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (Token.IsCancellationRequested)
        {
            // Cancelled: the consumer sees the cancellation; nothing to report here.
        }
        catch (Exception ex)
        {
            // The input itself failed (a listing error, a broken stream): finish what was admitted, then report it.
            _sourceError = ex;
        }
        finally
        {
            Volatile.Write(ref _admittedCount, index);
            writer.TryComplete();
            Settle(1);
        }
    }

    private async Task PrepareStageAsync()
    {
        var control = _prepareWorkers!;
        try
        {
            // One worker prepares while the replicas are built; the others are parked until a started replica waits on
            // preparation, and park again when the prepared queue is full (PrepareWorkers). Builds and preparation both
            // want every core at the start, and a replica that starts sooner is busy sooner.
            var workers = new Task[control.Limit];
            workers[0] = Task.Run(PrepareWorkerAsync);
            for (var i = 1; i < workers.Length; i++)
            {
                workers[i] = Task.Run(async () =>
                {
                    await control.WaitToBeCalledAsync(Token).ConfigureAwait(false);
                    await PrepareWorkerAsync().ConfigureAwait(false);
                });
            }

            await Task.WhenAll(workers).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (Token.IsCancellationRequested)
        {
            // Cancelled.
        }
        finally
        {
            _ready.Writer.TryComplete();
        }
    }

    private async Task PrepareWorkerAsync()
    {
        var control = _prepareWorkers!;
        var reader = _toPrepare!.Reader;
        var writer = _ready.Writer;
        while (await reader.WaitToReadAsync(Token).ConfigureAwait(false))
        {
            while (reader.TryRead(out var work))
            {
                control.Preparing(nothingPrepared: _ready.Reader.Count == 0);
                try
                {
                    work.Prepared = await _prepare!(work.Item, Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (Token.IsCancellationRequested)
                {
                    throw;
                }
                catch (Exception ex)
                {
                    EmitFailure(work, ItemError.FromException(ex, FailureStage.Prepare), null, 1);
                    continue;
                }

                if (!writer.TryWrite(work))
                {
                    // Preparation is ahead: this worker hands its item over when there is room, then parks unless it is
                    // the last one running.
                    var park = control.QueueWasFull();
                    await writer.WriteAsync(work, Token).ConfigureAwait(false);
                    if (park)
                    {
                        await control.WaitToBeCalledAsync(Token).ConfigureAwait(false);
                    }
                }
            }
        }

        control.Finish(); // the input is used up: parked workers end too
    }

    private PrepareSnapshot SnapshotPreparation(PrepareWorkers workers) => new(
        workers.Running,
        workers.Limit,
        workers.MostRunning,
        _ready.Reader.Count,
        (int)Math.Max(0, Interlocked.Read(ref _queued)),
        workers.ReplicaWaits,
        workers.ReplicaWaitTime,
        workers.QueueFull);

    // ---- batching -------------------------------------------------------------------------------------

    private async Task BatchAsync()
    {
        var reader = _ready.Reader;
        var max = _options.MaxBatchSize;
        var buffer = new List<WorkItem<TIn, TPrepared>>(max);
        long deadline = 0;
        try
        {
            while (true)
            {
                if (reader.TryRead(out var work))
                {
                    if (buffer.Count == 0)
                    {
                        deadline = _time.GetTimestamp() + (long)(_options.MaxBatchDelay.TotalSeconds * _time.TimestampFrequency);
                    }

                    buffer.Add(work);
                    if (buffer.Count >= max)
                    {
                        await _batchSlots.WaitAsync(Token).ConfigureAwait(false);
                        Enqueue(buffer, holdsSlot: true);
                    }

                    continue;
                }

                if (buffer.Count == 0)
                {
                    if (!await reader.WaitToReadAsync(Token).ConfigureAwait(false))
                    {
                        break;
                    }

                    continue;
                }

                switch (await WaitForMoreAsync(reader, deadline).ConfigureAwait(false))
                {
                    case Wait.More:
                        continue;
                    case Wait.Completed:
                        await FlushPartialAsync(reader, buffer).ConfigureAwait(false);
                        return;
                    default:
                        await FlushPartialAsync(reader, buffer).ConfigureAwait(false);
                        continue;
                }
            }

            if (buffer.Count > 0)
            {
                await FlushPartialAsync(reader, buffer).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (Token.IsCancellationRequested)
        {
            // Cancelled.
        }
    }

    private enum Wait
    {
        More,
        Deadline,
        Completed,
    }

    private async ValueTask<Wait> WaitForMoreAsync(ChannelReader<WorkItem<TIn, TPrepared>> reader, long deadline)
    {
        var waiting = reader.WaitToReadAsync(Token);
        if (waiting.IsCompleted)
        {
            return await waiting.ConfigureAwait(false) ? Wait.More : Wait.Completed;
        }

        var remaining = _time.GetElapsedTime(_time.GetTimestamp(), deadline);
        if (remaining <= TimeSpan.Zero)
        {
            return Wait.Deadline;
        }

        using var delayCts = CancellationTokenSource.CreateLinkedTokenSource(Token);
        var waitTask = waiting.AsTask();
        var delay = Task.Delay(remaining, _time, delayCts.Token);
        if (await Task.WhenAny(waitTask, delay).ConfigureAwait(false) == waitTask)
        {
            await delayCts.CancelAsync().ConfigureAwait(false);
            return await waitTask.ConfigureAwait(false) ? Wait.More : Wait.Completed;
        }

        Token.ThrowIfCancellationRequested();
        return Wait.Deadline;
    }

    /// <summary>
    /// Sends a partly filled batch. While every replica is busy (no free queue slot) the batch keeps
    /// growing towards the maximum, so batches are large exactly when the replicas are the bottleneck.
    /// </summary>
    private async Task FlushPartialAsync(ChannelReader<WorkItem<TIn, TPrepared>> reader, List<WorkItem<TIn, TPrepared>> buffer)
    {
        var max = _options.MaxBatchSize;
        if (!_batchSlots.Wait(0))
        {
            var slot = _batchSlots.WaitAsync(Token);
            while (buffer.Count < max && !slot.IsCompleted)
            {
                if (reader.TryRead(out var more))
                {
                    buffer.Add(more);
                    continue;
                }

                var waitTask = reader.WaitToReadAsync(Token).AsTask();
                if (await Task.WhenAny(slot, waitTask).ConfigureAwait(false) == slot || !await waitTask.ConfigureAwait(false))
                {
                    break;
                }
            }

            await slot.ConfigureAwait(false);
        }

        while (buffer.Count < max && reader.TryRead(out var more))
        {
            buffer.Add(more);
        }

        Enqueue(buffer, holdsSlot: true);
    }

    private void Enqueue(List<WorkItem<TIn, TPrepared>> buffer, bool holdsSlot)
    {
        Push(new WorkBatch<TIn, TPrepared>([.. buffer], holdsSlot));
        buffer.Clear();
    }

    private void Requeue(WorkItem<TIn, TPrepared>[] items) => Push(new WorkBatch<TIn, TPrepared>(items, holdsSlot: false));

    private void Push(WorkBatch<TIn, TPrepared> batch)
    {
        Interlocked.Increment(ref _queued);
        InferPoolMetrics.QueueDepth.Add(1);
        _batches.Writer.TryWrite(batch);
    }

    // ---- results --------------------------------------------------------------------------------------

    private void Emit(InferenceResult<TIn, TOut>[] results)
    {
        _results.Writer.TryWrite(results);
        Settle(results.Length);
    }

    private void EmitFailure(in WorkItem<TIn, TPrepared> work, ItemError error, ReplicaSlot? slot, int attempts)
    {
        InferPoolMetrics.Items.Add(
            1,
            new KeyValuePair<string, object?>("status", "failed"),
            new KeyValuePair<string, object?>("device", slot?.Device.ToString()));
        if (slot is not null)
        {
            _monitor?.ItemFailedOn(slot);
            _release?.Invoke(work.Prepared);
        }

        Emit([new InferenceResult<TIn, TOut>(work.Index, work.Item, Outcome<TOut>.Failure(error), slot, attempts)]);
    }

    /// <summary>Counts items (or the reader's token) as done; the last one completes the job.</summary>
    private void Settle(int count)
    {
        if (Interlocked.Add(ref _outstanding, -count) != 0)
        {
            return;
        }

        _batches.Writer.TryComplete();
        var error = _sourceError is { } ex
            ? new InferencePoolException($"Reading the input failed after {Volatile.Read(ref _admittedCount)} item(s): {ex.Message}", ex)
            : null;
        _results.Writer.TryComplete(error);
    }

    private void Fail(Exception error)
    {
        _results.Writer.TryComplete(error);
        _cts.Cancel();
    }

    private static TimeSpan Backoff(TimeSpan initial, int failuresInRow)
    {
        if (initial <= TimeSpan.Zero || failuresInRow <= 0)
        {
            return TimeSpan.Zero;
        }

        var factor = Math.Pow(2, Math.Min(failuresInRow - 1, 16));
        var ticks = Math.Min(initial.Ticks * factor, MaxBackoff.Ticks);
        return TimeSpan.FromTicks((long)Math.Max(ticks, initial.Ticks));
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stopping the pool: some stages did not finish within {Timeout} and were left behind.")]
    private static partial void LogAbandoned(ILogger logger, TimeSpan timeout);
}
