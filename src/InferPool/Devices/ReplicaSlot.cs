namespace InferPool.Devices;

/// <summary>
/// The place of one replica in a job: its device and its number there. A replica factory is called with
/// its slot, once per replica (and again when the replica is rebuilt after a fault).
/// </summary>
public sealed class ReplicaSlot
{
    internal ReplicaSlot(Device device, int indexOnDevice, int replicasOnDevice, int id, int totalReplicas)
    {
        Device = device;
        IndexOnDevice = indexOnDevice;
        ReplicasOnDevice = replicasOnDevice;
        Id = id;
        TotalReplicas = totalReplicas;
        Name = $"{device}#{indexOnDevice}";
    }

    /// <summary>The device this replica runs on.</summary>
    public Device Device { get; }

    /// <summary>The replica's number on its device, from 0.</summary>
    public int IndexOnDevice { get; }

    /// <summary>How many replicas share this device (useful to size threads or memory per replica).</summary>
    public int ReplicasOnDevice { get; }

    /// <summary>The replica's number in the whole job, from 0.</summary>
    public int Id { get; }

    /// <summary>How many replicas the job has in all.</summary>
    public int TotalReplicas { get; }

    /// <summary>A short name, <c>device#n</c>, e.g. <c>cuda:1#0</c>.</summary>
    public string Name { get; }

    /// <inheritdoc />
    public override string ToString() => Name;
}
