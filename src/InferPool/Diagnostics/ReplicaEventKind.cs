namespace InferPool.Diagnostics;

/// <summary>What happened to a replica.</summary>
public enum ReplicaEventKind
{
    /// <summary>The replica was built (first time or after a fault).</summary>
    Started = 0,

    /// <summary>Building the replica failed; it will be tried again after a backoff.</summary>
    StartFailed = 1,

    /// <summary>The replica broke or hung during a batch; it was disposed and will be rebuilt.</summary>
    Faulted = 2,

    /// <summary>The slot was given up after failing to build too many times in a row.</summary>
    Removed = 3,

    /// <summary>The last slot of a device was given up: the device takes no more work in this job.</summary>
    DeviceRemoved = 4,

    /// <summary>The replica ran out of device memory on a batch; its batch limit was halved (until it is rebuilt).</summary>
    BatchLimitHalved = 5,

    /// <summary>A device's replicas were capped so that its memory keeps the configured headroom; the extra slots take no work.</summary>
    Capped = 6,
}
