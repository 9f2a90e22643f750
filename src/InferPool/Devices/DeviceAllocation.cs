namespace InferPool.Devices;

/// <summary>One device of a <see cref="ReplicaPlan"/> and how many replicas run on it.</summary>
/// <param name="Device">The device.</param>
/// <param name="Replicas">Replicas on it (at least 1).</param>
public readonly record struct DeviceAllocation(Device Device, int Replicas)
{
    /// <inheritdoc />
    public override string ToString() => Replicas == 1 ? Device.ToString() : $"{Device}={Replicas}";
}
