using InferPool.Devices;

namespace InferPool.Diagnostics;

/// <summary>
/// Live counters for one job: pass it in <see cref="InferencePoolOptions.Monitor"/>, then poll
/// <see cref="Snapshot"/> from a progress display and subscribe to <see cref="ReplicaChanged"/>.
/// </summary>
/// <remarks>Counters are updated with interlocked operations on the hot path; a snapshot is cheap and thread-safe.</remarks>
public sealed class PoolMonitor
{
    private readonly TimeProvider _timeProvider;
    private DeviceCounters[] _devices = [];
    private long _startTimestamp;
    private long _admitted;
    private long _succeeded;
    private long _failed;
    private long _released;
    private long _peakInFlight;
    private Func<PrepareSnapshot>? _prepare;

    /// <summary>Creates a monitor.</summary>
    /// <param name="timeProvider">The clock for elapsed time and rates; defaults to the system clock.</param>
    public PoolMonitor(TimeProvider? timeProvider = null)
    {
        _timeProvider = timeProvider ?? TimeProvider.System;
        _startTimestamp = _timeProvider.GetTimestamp();
    }

    /// <summary>Raised when a replica starts, faults or is removed. Handlers run on pool threads and must be quick.</summary>
    public event EventHandler<ReplicaEvent>? ReplicaChanged;

    /// <summary>The current progress.</summary>
    public PoolSnapshot Snapshot()
    {
        var elapsed = _timeProvider.GetElapsedTime(Volatile.Read(ref _startTimestamp));
        var seconds = Math.Max(elapsed.TotalSeconds, 1e-9);
        var succeeded = Volatile.Read(ref _succeeded);
        var failed = Volatile.Read(ref _failed);
        var admitted = Volatile.Read(ref _admitted);
        var devices = Volatile.Read(ref _devices);
        var deviceSnapshots = new DeviceSnapshot[devices.Length];
        for (var i = 0; i < devices.Length; i++)
        {
            var d = devices[i];
            var busy = TimeSpan.FromTicks(Volatile.Read(ref d.BusyTicks)).TotalSeconds;
            deviceSnapshots[i] = new DeviceSnapshot(
                d.Device,
                d.Planned,
                Volatile.Read(ref d.Alive),
                Volatile.Read(ref d.Items),
                Volatile.Read(ref d.Batches),
                Volatile.Read(ref d.Items) / seconds,
                Math.Clamp(busy / (seconds * d.Planned), 0, 1),
                Volatile.Read(ref d.Faults),
                Volatile.Read(ref d.Removed) != 0);
        }

        return new PoolSnapshot(
            elapsed,
            admitted,
            succeeded,
            failed,
            admitted - Volatile.Read(ref _released),
            Volatile.Read(ref _peakInFlight),
            (succeeded + failed) / seconds,
            deviceSnapshots)
        {
            Prepare = Volatile.Read(ref _prepare)?.Invoke(),
        };
    }

    internal void Start(ReplicaPlan plan, Func<PrepareSnapshot>? prepare)
    {
        Volatile.Write(ref _prepare, prepare);
        Volatile.Write(ref _devices, [.. plan.Devices.Select(d => new DeviceCounters(d.Device, d.Replicas))]);
        Volatile.Write(ref _startTimestamp, _timeProvider.GetTimestamp());
    }

    internal void Admitted()
    {
        var admitted = Interlocked.Increment(ref _admitted);
        var inFlight = admitted - Volatile.Read(ref _released);
        var peak = Volatile.Read(ref _peakInFlight);
        while (inFlight > peak)
        {
            var seen = Interlocked.CompareExchange(ref _peakInFlight, inFlight, peak);
            if (seen == peak)
            {
                break;
            }

            peak = seen;
        }
    }

    internal void Released(bool success)
    {
        Interlocked.Increment(ref success ? ref _succeeded : ref _failed);
        Interlocked.Increment(ref _released);
    }

    internal void BatchDone(ReplicaSlot slot, int items, TimeSpan busy)
    {
        var d = For(slot);
        if (d is null)
        {
            return;
        }

        Interlocked.Add(ref d.Items, items);
        Interlocked.Increment(ref d.Batches);
        Interlocked.Add(ref d.BusyTicks, busy.Ticks);
    }

    internal void ItemFailedOn(ReplicaSlot slot)
    {
        if (For(slot) is { } d)
        {
            Interlocked.Increment(ref d.Items);
        }
    }

    internal void Raise(ReplicaEvent e)
    {
        var d = For(e.Slot);
        if (d is not null)
        {
            switch (e.Kind)
            {
                case ReplicaEventKind.Started:
                    Interlocked.Increment(ref d.Alive);
                    break;
                case ReplicaEventKind.Faulted:
                    Interlocked.Decrement(ref d.Alive);
                    Interlocked.Increment(ref d.Faults);
                    break;
                case ReplicaEventKind.DeviceRemoved:
                    Volatile.Write(ref d.Removed, 1);
                    break;
            }
        }

        ReplicaChanged?.Invoke(this, e);
    }

    internal void ReplicaStopped(ReplicaSlot slot)
    {
        var d = For(slot);
        if (d is not null)
        {
            Interlocked.Decrement(ref d.Alive);
        }
    }

    private DeviceCounters? For(ReplicaSlot slot)
    {
        foreach (var d in Volatile.Read(ref _devices))
        {
            if (d.Device == slot.Device)
            {
                return d;
            }
        }

        return null;
    }

    private sealed class DeviceCounters(Device device, int planned)
    {
        public readonly Device Device = device;
        public readonly int Planned = planned;
        public int Alive;
        public long Items;
        public long Batches;
        public long BusyTicks;
        public int Faults;
        public int Removed;
    }
}
