using System.Collections.ObjectModel;

namespace InferPool.Devices;

/// <summary>
/// Which devices a job runs on and how many replicas each gets ("trade memory for time").
/// </summary>
/// <remarks>
/// Build one with <see cref="Create(DeviceAllocation[])"/>, <see cref="Cpu"/>, or from text with
/// <see cref="DeviceSpec.Parse"/> and <see cref="DeviceSpec.Resolve(IDeviceInventory, int)"/>.
/// </remarks>
public sealed class ReplicaPlan
{
    private ReplicaPlan(IReadOnlyList<DeviceAllocation> devices)
    {
        Devices = devices;
        var slots = new List<ReplicaSlot>();
        var total = devices.Sum(d => d.Replicas);
        foreach (var allocation in devices)
        {
            for (var i = 0; i < allocation.Replicas; i++)
            {
                slots.Add(new ReplicaSlot(allocation.Device, i, allocation.Replicas, slots.Count, total));
            }
        }

        Slots = new ReadOnlyCollection<ReplicaSlot>(slots);
    }

    /// <summary>The devices, each once, with their replica counts.</summary>
    public IReadOnlyList<DeviceAllocation> Devices { get; }

    /// <summary>Every replica slot, device by device.</summary>
    public IReadOnlyList<ReplicaSlot> Slots { get; }

    /// <summary>The number of replicas in all.</summary>
    public int TotalReplicas => Slots.Count;

    /// <summary>A plan of <paramref name="replicas"/> replicas on the CPU.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="replicas"/> is less than 1.</exception>
    public static ReplicaPlan Cpu(int replicas = 1) => Create(new DeviceAllocation(Device.Cpu, replicas));

    /// <summary>A plan from explicit allocations.</summary>
    /// <exception cref="ArgumentException">No allocation, a device named twice, or a replica count below 1.</exception>
    public static ReplicaPlan Create(params DeviceAllocation[] devices)
    {
        ArgumentNullException.ThrowIfNull(devices);
        if (devices.Length == 0)
        {
            throw new ArgumentException("A replica plan needs at least one device.", nameof(devices));
        }

        foreach (var d in devices)
        {
            if (d.Replicas < 1)
            {
                throw new ArgumentException($"Device {d.Device} has {d.Replicas} replicas; each device needs at least 1.", nameof(devices));
            }
        }

        var twice = devices.GroupBy(d => d.Device).FirstOrDefault(g => g.Count() > 1);
        if (twice is not null)
        {
            throw new ArgumentException($"Device {twice.Key} is named more than once.", nameof(devices));
        }

        return new ReplicaPlan([.. devices]);
    }

    /// <summary>The plan in <see cref="DeviceSpec"/> syntax, e.g. <c>cuda:0=2,cuda:1=2</c>.</summary>
    public override string ToString() => string.Join(',', Devices);
}
