namespace InferPool.Scheduling;

/// <summary>
/// How many of a job's prepare workers run: one to begin with; one more each time a replica that has started finds
/// nothing to run and nothing prepared (it waits on preparation), or a worker starts an item while a replica waits so;
/// one fewer each time a worker finds the prepared-items queue full (preparation is ahead), never fewer than one.
/// </summary>
/// <remarks>
/// The bounded prepared-items queue already stops preparation from running far ahead. What this adds is that workers
/// beyond the first run only while the replicas are waiting on them: on a CPU-bound job they stay parked instead of
/// decoding in bursts on the cores the replicas use, and on a job that preparation limits (a GPU's) every worker joins
/// within a few items. Decisions follow events, not a clock, so they are the same on a slow or a busy machine.
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage(
    "Reliability",
    "CA1001:Types that own disposable fields should be disposable",
    Justification = "The semaphore is only awaited, so it never allocates a wait handle; workers abandoned after a job's drain timeout may still touch it.")]
internal sealed class PrepareWorkers
{
    private readonly SemaphoreSlim _called = new(0);
    private readonly Lock _gate = new();
    private int _running = 1;
    private int _most = 1;
    private bool _finished;
    private int _waitingReplicas;
    private long _replicaWaits;
    private long _replicaWaitTicks;
    private long _queueFull;

    /// <summary>Creates the controller for <paramref name="limit"/> workers, one of them running.</summary>
    public PrepareWorkers(int limit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        Limit = limit;
    }

    /// <summary>The most workers that may run: the job's prepare parallelism.</summary>
    public int Limit { get; }

    /// <summary>Workers running now (not parked).</summary>
    public int Running
    {
        get
        {
            lock (_gate)
            {
                return _running;
            }
        }
    }

    /// <summary>The most workers that ran at once.</summary>
    public int MostRunning
    {
        get
        {
            lock (_gate)
            {
                return _most;
            }
        }
    }

    /// <summary>Times a started replica found nothing to run and nothing prepared.</summary>
    public long ReplicaWaits => Interlocked.Read(ref _replicaWaits);

    /// <summary>The time replicas spent waiting on preparation, all together.</summary>
    public TimeSpan ReplicaWaitTime => TimeSpan.FromTicks(Interlocked.Read(ref _replicaWaitTicks));

    /// <summary>Times a worker found the prepared-items queue full.</summary>
    public long QueueFull => Interlocked.Read(ref _queueFull);

    /// <summary>A replica found no batch to run; it waits for one until <see cref="ReplicaFed"/>.</summary>
    /// <param name="nothingPrepared">Nothing is prepared either: the replica waits on preparation.</param>
    public void ReplicaWaiting(bool nothingPrepared)
    {
        Interlocked.Increment(ref _waitingReplicas);
        if (nothingPrepared)
        {
            Interlocked.Increment(ref _replicaWaits);
            CallOneMore();
        }
    }

    /// <summary>A replica that waited has a batch, or stopped waiting.</summary>
    /// <param name="onPreparation">How long it waited, when it waited on preparation; zero otherwise.</param>
    public void ReplicaFed(TimeSpan onPreparation)
    {
        Interlocked.Decrement(ref _waitingReplicas);
        Interlocked.Add(ref _replicaWaitTicks, onPreparation.Ticks);
    }

    /// <summary>A worker starts preparing an item.</summary>
    /// <param name="nothingPrepared">Nothing is prepared: a replica that waits now waits on this item.</param>
    public void Preparing(bool nothingPrepared)
    {
        if (nothingPrepared && Volatile.Read(ref _waitingReplicas) > 0)
        {
            CallOneMore();
        }
    }

    /// <summary>
    /// A worker found the prepared-items queue full: true when it should park (<see cref="WaitToBeCalledAsync"/>) once it
    /// has handed its item over, because another worker still runs; it no longer counts as running from now.
    /// </summary>
    public bool QueueWasFull()
    {
        Interlocked.Increment(ref _queueFull);
        lock (_gate)
        {
            if (_running <= 1 || _finished)
            {
                return false;
            }

            _running--;
            return true;
        }
    }

    /// <summary>Parks a worker until it is called (<see cref="Running"/> already counts it then) or the input ends.</summary>
    public Task WaitToBeCalledAsync(CancellationToken cancellationToken) => _called.WaitAsync(cancellationToken);

    /// <summary>The input is used up: every parked worker is let go, to find that out and end.</summary>
    public void Finish()
    {
        lock (_gate)
        {
            if (_finished)
            {
                return;
            }

            _finished = true;
        }

        _called.Release(Limit);
    }

    private void CallOneMore()
    {
        lock (_gate)
        {
            if (_running >= Limit || _finished)
            {
                return;
            }

            _running++;
            _most = Math.Max(_most, _running);
        }

        _called.Release();
    }
}
