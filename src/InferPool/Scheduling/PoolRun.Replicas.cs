using System.Diagnostics;
using System.Threading.Channels;
using InferPool.Devices;
using InferPool.Diagnostics;
using InferPool.Replicas;
using InferPool.Results;
using Microsoft.Extensions.Logging;

namespace InferPool.Scheduling;

/// <summary>The replica side of a job: one loop per slot that builds its replica, pulls batches and recovers from faults.</summary>
internal sealed partial class PoolRun<TIn, TPrepared, TOut>
{
    private async Task ReplicaLoopAsync(ReplicaSlot slot)
    {
        IReplica<TPrepared, TOut>? replica = null;
        var limit = new BatchLimit(_options.MaxBatchSize);
        var startFailures = 0;
        var faultsInRow = 0;
        var reader = _batches.Reader;
        var gate = _gpuGates.GetValueOrDefault(slot.Device);
        // The first two replicas on a GPU are measured, one after the other and alone: the first one's cost includes
        // what every session of the process shares, the second one's is what each more costs. The others start once
        // it is known how many fit; when all fit even at the first one's cost, the second is not measured and the
        // rest start as soon as the first is.
        var measuring = gate is not null && slot.IndexOnDevice <= 1;
        try
        {
            if (gate is not null && slot.IndexOnDevice == 1)
            {
                await gate.FirstMeasured.Task.WaitAsync(Token).ConfigureAwait(false);
                measuring = gate.Cap.Task.IsCompleted is false;
                if (!measuring && slot.IndexOnDevice >= await gate.Cap.Task.ConfigureAwait(false))
                {
                    CapSlot(slot, gate.Reason!);
                    return;
                }
            }
            else if (gate is not null && !measuring)
            {
                var cap = await gate.Cap.Task.WaitAsync(Token).ConfigureAwait(false);
                if (slot.IndexOnDevice >= cap)
                {
                    CapSlot(slot, gate.Reason!);
                    return;
                }
            }

            if (measuring)
            {
                gate!.Before[slot.IndexOnDevice] = _options.GpuTelemetry!.Read(slot.Device);
            }

            while (true)
            {
                if (replica is null)
                {
                    await DelayAsync(Backoff(_options.RestartBackoff, Math.Max(startFailures, faultsInRow))).ConfigureAwait(false);
                    try
                    {
                        replica = await _factory.CreateAsync(slot, Token).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (!Token.IsCancellationRequested)
                    {
                        startFailures++;
                        if (startFailures >= _options.MaxReplicaStartFailures)
                        {
                            RemoveSlot(slot, startFailures, ex);
                            return;
                        }

                        Raise(new ReplicaEvent(slot, ReplicaEventKind.StartFailed, $"Replica {slot} failed to start ({startFailures} of {_options.MaxReplicaStartFailures} tries): {ex.Message}", ex));
                        continue;
                    }

                    startFailures = 0;
                    limit = new BatchLimit(_options.MaxBatchSize);
                    Raise(new ReplicaEvent(slot, ReplicaEventKind.Started, $"Replica {slot} started."));
                    if (measuring && await WarmUpAsync(slot, replica, limit).ConfigureAwait(false))
                    {
                        measuring = false;
                        if (!ResolveGpuMeasurement(slot, gate!))
                        {
                            return; // the second replica left less than the headroom free: it goes (disposed below)
                        }
                    }
                }

                if (!reader.TryRead(out var batch))
                {
                    if (!await WaitForBatchAsync(reader).ConfigureAwait(false))
                    {
                        return;
                    }

                    continue;
                }

                Interlocked.Decrement(ref _queued);
                InferPoolMetrics.QueueDepth.Add(-1);
                if (batch.HoldsSlot)
                {
                    batch.HoldsSlot = false;
                    _batchSlots.Release();
                }

                if (await ProcessAsync(slot, replica, batch.Items, limit).ConfigureAwait(false))
                {
                    faultsInRow = 0;
                    if (measuring)
                    {
                        // No placeholder batch to warm it up with: measured after its first real batch instead.
                        measuring = false;
                        if (!ResolveGpuMeasurement(slot, gate!))
                        {
                            return;
                        }
                    }
                }
                else
                {
                    faultsInRow++;
                    _monitor?.Raise(new ReplicaEvent(slot, ReplicaEventKind.Faulted, $"Replica {slot} faulted and will be rebuilt."));
                    await DisposeReplicaAsync(slot, replica).ConfigureAwait(false);
                    replica = null;
                }
            }
        }
        catch (OperationCanceledException) when (Token.IsCancellationRequested)
        {
            // Cancelled: fall through to dispose.
        }
        catch (Exception ex)
        {
            // A bug in the pool itself, not in a replica: fail the job loudly rather than hang it.
            Fail(new InferencePoolException($"Replica loop {slot} failed unexpectedly: {ex.Message}", ex));
        }
        finally
        {
            // Never measured (no batch, no replica): the second one is measured without the first, and the others
            // start capped by the first one's figure alone, or uncapped when neither was measured.
            if (gate is not null && (measuring || slot.IndexOnDevice == 1))
            {
                gate.FirstMeasured.TrySetResult();
                if (slot.IndexOnDevice == 1 && !gate.Cap.Task.IsCompleted)
                {
                    gate.Before[1] = null;
                    ResolveGpuMeasurement(slot, gate, capThisSlot: false);
                }
                else
                {
                    gate.Cap.TrySetResult(int.MaxValue);
                }
            }

            if (replica is not null)
            {
                _monitor?.ReplicaStopped(slot);
                await DisposeReplicaAsync(slot, replica).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Waits for a batch; false when no more will come. A wait with nothing prepared either is a wait on preparation:
    /// it is counted and timed, and it calls in another prepare worker.
    /// </summary>
    private async ValueTask<bool> WaitForBatchAsync(ChannelReader<WorkBatch<TIn, TPrepared>> reader)
    {
        if (_prepareWorkers is not { } workers)
        {
            return await reader.WaitToReadAsync(Token).ConfigureAwait(false);
        }

        var onPreparation = _ready.Reader.Count == 0;
        var started = _time.GetTimestamp();
        workers.ReplicaWaiting(onPreparation);
        try
        {
            return await reader.WaitToReadAsync(Token).ConfigureAwait(false);
        }
        finally
        {
            workers.ReplicaFed(onPreparation ? _time.GetElapsedTime(started) : TimeSpan.Zero);
        }
    }

    /// <summary>
    /// Runs one batch. A batch that throws an item fault is split in halves on this replica until the bad
    /// item is alone. A batch that runs out of device memory halves the replica's batch limit and is run in
    /// pieces of that size. A replica fault (or running out of memory on one item) puts the batch back in the
    /// queue in halves and returns false.
    /// </summary>
    private async Task<bool> ProcessAsync(ReplicaSlot slot, IReplica<TPrepared, TOut> replica, WorkItem<TIn, TPrepared>[] items, BatchLimit limit)
    {
        var pending = new Stack<ArraySegment<WorkItem<TIn, TPrepared>>>();
        pending.Push(items);
        while (pending.Count > 0)
        {
            var segment = pending.Pop();
            if (segment.Count > limit.Value)
            {
                // Larger than this replica takes since it ran out of memory: run it in pieces, in order.
                for (var end = segment.Count; end > 0; end -= limit.Value)
                {
                    var start = Math.Max(0, end - limit.Value);
                    pending.Push(segment[start..end]);
                }

                continue;
            }

            var (outcomes, error, kind) = await CallAsync(slot, replica, segment).ConfigureAwait(false);
            if (error is null)
            {
                EmitOutcomes(slot, segment, outcomes!);
                continue;
            }

            if (kind == FaultKind.OutOfMemory && segment.Count > 1)
            {
                limit.Value = segment.Count / 2;
                Raise(new ReplicaEvent(slot, ReplicaEventKind.BatchLimitHalved, $"Replica {slot} ran out of memory on a batch of {segment.Count}; it now takes at most {limit.Value} item(s) per call until it is rebuilt: {error.Message}", error));
                pending.Push(segment);
                continue;
            }

            if (kind is FaultKind.Replica or FaultKind.OutOfMemory)
            {
                LogReplicaFault(_log, slot.Name, segment.Count, error.Message, error);
                InferPoolMetrics.ReplicaFaults.Add(1, new KeyValuePair<string, object?>("device", slot.Device.ToString()));
                RequeueAfterReplicaFault(slot, segment, error);
                while (pending.Count > 0)
                {
                    Requeue([.. pending.Pop()]);
                }

                return false;
            }

            if (segment.Count > 1)
            {
                var half = segment.Count / 2;
                pending.Push(segment[half..]);
                pending.Push(segment[..half]);
                continue;
            }

            ref var item = ref segment.Array![segment.Offset];
            item.Failures++;
            if (kind == FaultKind.Transient && item.Failures < _options.MaxAttempts)
            {
                pending.Push(segment);
                continue;
            }

            EmitFailure(item, ItemError.FromException(error, FailureStage.Infer), slot, item.Failures);
        }

        return true;
    }

    private async Task<(IReadOnlyList<Outcome<TOut>>? Outcomes, Exception? Error, FaultKind Kind)> CallAsync(
        ReplicaSlot slot,
        IReplica<TPrepared, TOut> replica,
        ArraySegment<WorkItem<TIn, TPrepared>> segment)
    {
        var inputs = new TPrepared[segment.Count];
        for (var i = 0; i < inputs.Length; i++)
        {
            inputs[i] = segment[i].Prepared;
        }

        using var timeout = _options.BatchTimeout is { } limit ? new CancellationTokenSource(limit, _time) : null;
        using var linked = timeout is null ? null : CancellationTokenSource.CreateLinkedTokenSource(Token, timeout.Token);
        var token = linked?.Token ?? Token;
        var started = Stopwatch.GetTimestamp();
        try
        {
            var call = replica.InferAsync(inputs, token);
            var outcomes = call.IsCompletedSuccessfully
                ? call.Result
                : await call.AsTask().WaitAsync(token).ConfigureAwait(false);
            if (outcomes is null || outcomes.Count != inputs.Length)
            {
                return (null, new InvalidOperationException($"Replica {slot} returned {outcomes?.Count ?? 0} outcomes for a batch of {inputs.Length}; a replica must return one outcome per input."), FaultKind.Item);
            }

            var elapsed = Stopwatch.GetElapsedTime(started);
            var device = new KeyValuePair<string, object?>("device", slot.Device.ToString());
            InferPoolMetrics.Batches.Add(1, device);
            InferPoolMetrics.BatchSize.Record(inputs.Length);
            InferPoolMetrics.BatchDuration.Record(elapsed.TotalMilliseconds, device);
            _monitor?.BatchDone(slot, inputs.Length, elapsed);
            return (outcomes, null, default);
        }
        catch (OperationCanceledException) when (Token.IsCancellationRequested)
        {
            throw;
        }
        catch (OperationCanceledException) when (timeout?.IsCancellationRequested == true)
        {
            var error = new TimeoutException($"Replica {slot} did not finish a batch of {inputs.Length} item(s) within {_options.BatchTimeout}; it is treated as hung.");
            return (null, error, FaultKind.Replica);
        }
        catch (Exception ex)
        {
            // Classified, not swallowed: the caller splits, retries or reports the items.
            return (null, ex, _classify(ex));
        }
    }

    private void RequeueAfterReplicaFault(ReplicaSlot slot, ArraySegment<WorkItem<TIn, TPrepared>> segment, Exception error)
    {
        if (segment.Count > 1)
        {
            var half = segment.Count / 2;
            Requeue([.. segment[..half]]);
            Requeue([.. segment[half..]]);
            return;
        }

        var item = segment[0];
        item.Failures++;
        if (item.Failures < _options.MaxAttempts)
        {
            Requeue([item]);
            return;
        }

        var poison = new ItemError(
            error.GetType().Name,
            $"The item broke or hung its replica on each of {item.Failures} attempts (last on {slot}): {error.Message}",
            FailureStage.Replica,
            error);
        EmitFailure(item, poison, slot, item.Failures);
    }

    private void EmitOutcomes(ReplicaSlot slot, ArraySegment<WorkItem<TIn, TPrepared>> segment, IReadOnlyList<Outcome<TOut>> outcomes)
    {
        var results = new InferenceResult<TIn, TOut>[segment.Count];
        var failed = 0;
        var latency = InferPoolMetrics.ItemLatency.Enabled;
        for (var i = 0; i < results.Length; i++)
        {
            var work = segment[i];
            var outcome = outcomes[i];
            if (!outcome.IsSuccess)
            {
                failed++;
            }

            results[i] = new InferenceResult<TIn, TOut>(work.Index, work.Item, outcome, slot, work.Failures + 1);
            _release?.Invoke(work.Prepared);
            if (latency && work.AdmittedAt != 0)
            {
                InferPoolMetrics.ItemLatency.Record(Stopwatch.GetElapsedTime(work.AdmittedAt).TotalMilliseconds);
            }
        }

        var device = new KeyValuePair<string, object?>("device", slot.Device.ToString());
        if (failed < results.Length)
        {
            InferPoolMetrics.Items.Add(results.Length - failed, new KeyValuePair<string, object?>("status", "ok"), device);
        }

        if (failed > 0)
        {
            InferPoolMetrics.Items.Add(failed, new KeyValuePair<string, object?>("status", "failed"), device);
        }

        Emit(results);
    }

    /// <summary>
    /// Brings a replica that is about to be measured to its working memory with one full batch of placeholder inputs,
    /// when the factory can make them. False when it cannot, or the batch failed (then its first real batch is measured).
    /// </summary>
    private async Task<bool> WarmUpAsync(ReplicaSlot slot, IReplica<TPrepared, TOut> replica, BatchLimit limit)
    {
        if (_factory is not IWarmUpInputs<TPrepared> source || source.WarmUpBatch(limit.Value) is not { Count: > 0 } batch)
        {
            return false;
        }

        try
        {
            await replica.InferAsync(batch, Token).ConfigureAwait(false);
            return true;
        }
        catch (Exception ex) when (!Token.IsCancellationRequested)
        {
            LogReplicaEvent(_log, LogLevel.Information, $"Replica {slot}: the placeholder batch of {batch.Count} failed ({ex.Message}); its memory is measured after its first real batch instead", ex);
            return false;
        }
    }

    /// <summary>
    /// Records a measured replica's memory. The first replica's lets the second start; the second's (or the first's,
    /// when it is the only one measured) sets the cap. False when this replica must go: the second one, when it left
    /// less than the headroom free.
    /// </summary>
    private bool ResolveGpuMeasurement(ReplicaSlot slot, GpuCapGate gate, bool capThisSlot = true)
    {
        var index = slot.IndexOnDevice;
        gate.After[index] = gate.Before[index] is null ? null : _options.GpuTelemetry!.Read(slot.Device);
        if (index == 0)
        {
            // When every planned replica fits even at what the first one took (its figure includes what they share,
            // so it is the most any one costs), the second is not measured: the rest start at once.
            if (gate.Before[0] is { } b && gate.After[0] is { } a
                && GpuReplicaCap.AllFitAtFirstCost(slot.Device, b, a, slot.ReplicasOnDevice, _options.GpuMemoryHeadroom) is { } fit)
            {
                gate.Reason = fit.Reason;
                LogReplicaEvent(_log, LogLevel.Information, fit.Reason, null);
                gate.Cap.TrySetResult(fit.Replicas);
            }

            gate.FirstMeasured.TrySetResult();
            return true;
        }

        if (gate.Before[0] is not { } before || gate.After[0] is not { } after)
        {
            gate.Reason = $"{slot.Device}: its memory could not be read; all {slot.ReplicasOnDevice} planned replicas are kept";
            gate.Cap.TrySetResult(int.MaxValue);
            return true;
        }

        var cap = GpuReplicaCap.Compute(slot.Device, before, after, gate.Before[1], gate.After[1], slot.ReplicasOnDevice, _options.GpuMemoryHeadroom);
        gate.Reason = cap.Reason;
        LogReplicaEvent(_log, LogLevel.Information, cap.Reason, null);
        gate.Cap.TrySetResult(cap.Replicas);
        if (index < cap.Replicas || !capThisSlot)
        {
            return true;
        }

        CapSlot(slot, cap.Reason);
        return false;
    }

    /// <summary>A slot left out because its GPU has no room for it: not a failure, and never the device's last slot.</summary>
    private void CapSlot(ReplicaSlot slot, string reason)
    {
        lock (_slotLock)
        {
            --_liveSlotsPerDevice[slot.Device];
            --_liveSlots;
        }

        Raise(new ReplicaEvent(slot, ReplicaEventKind.Capped, $"Replica {slot} is not started: {reason}."));
    }

    private void RemoveSlot(ReplicaSlot slot, int failures, Exception error)
    {
        var message = $"Replica {slot} was given up after {failures} failed starts in a row: {error.Message}";
        Raise(new ReplicaEvent(slot, ReplicaEventKind.Removed, message, error));
        bool deviceGone;
        bool allGone;
        lock (_slotLock)
        {
            deviceGone = --_liveSlotsPerDevice[slot.Device] == 0;
            allGone = --_liveSlots == 0;
            if (deviceGone)
            {
                _removalReasons.Add($"{slot.Device}: {error.Message}");
            }
        }

        if (deviceGone)
        {
            Raise(new ReplicaEvent(
                slot,
                ReplicaEventKind.DeviceRemoved,
                $"Device {slot.Device} was removed from the job: none of its replicas could be started (last error: {error.Message}). The job goes on with the other devices.",
                error));
        }

        if (allGone)
        {
            string reasons;
            lock (_slotLock)
            {
                reasons = string.Join("; ", _removalReasons);
            }

            Fail(new InferencePoolException($"No replica is left to run the job: every device failed to start its replicas ({reasons})."));
        }
    }

    private void Raise(ReplicaEvent e)
    {
        switch (e.Kind)
        {
            case ReplicaEventKind.Started:
                LogReplicaEvent(_log, LogLevel.Debug, e.Message, e.Exception);
                break;
            case ReplicaEventKind.StartFailed:
            case ReplicaEventKind.Removed:
            case ReplicaEventKind.BatchLimitHalved:
            case ReplicaEventKind.Capped:
                LogReplicaEvent(_log, LogLevel.Warning, e.Message, e.Exception);
                break;
            default:
                LogReplicaEvent(_log, LogLevel.Error, e.Message, e.Exception);
                break;
        }

        _monitor?.Raise(e);
    }

    private async Task DisposeReplicaAsync(ReplicaSlot slot, IReplica<TPrepared, TOut> replica)
    {
        try
        {
            await replica.DisposeAsync().AsTask().WaitAsync(_options.DrainTimeout, _time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            LogDisposeFailed(_log, slot.Name, $"it did not finish within {_options.DrainTimeout} and was left behind", null);
        }
        catch (Exception ex)
        {
            // A replica that fails to dispose must not fail the job; it is recorded and left.
            LogDisposeFailed(_log, slot.Name, ex.Message, ex);
        }
    }

    private Task DelayAsync(TimeSpan delay) => delay <= TimeSpan.Zero ? Task.CompletedTask : Task.Delay(delay, _time, Token);

    [LoggerMessage(Message = "{Message}")]
    private static partial void LogReplicaEvent(ILogger logger, LogLevel level, string message, Exception? exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "Replica {Slot} faulted on a batch of {Count} item(s); it will be rebuilt and the batch retried: {Reason}")]
    private static partial void LogReplicaFault(ILogger logger, string slot, int count, string reason, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Disposing replica {Slot} failed: {Reason}")]
    private static partial void LogDisposeFailed(ILogger logger, string slot, string reason, Exception? exception);

    /// <summary>The most items a replica takes per call; halved when it runs out of device memory, reset when it is rebuilt.</summary>
    private sealed class BatchLimit(int value)
    {
        public int Value { get; set; } = value;
    }

    /// <summary>The first two replicas' measurements on one GPU, which the others on it wait for.</summary>
    private sealed class GpuCapGate
    {
        /// <summary>Set once the first replica is measured (or gave up): the second one starts then.</summary>
        public TaskCompletionSource FirstMeasured { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>How many replicas the GPU takes; set once the second replica is measured (or gave up).</summary>
        public TaskCompletionSource<int> Cap { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Free memory before the first and the second replica were built.</summary>
        public GpuReading?[] Before { get; } = new GpuReading?[2];

        /// <summary>Free memory once the first and the second replica had run a full batch.</summary>
        public GpuReading?[] After { get; } = new GpuReading?[2];

        public string? Reason { get; set; }
    }
}
