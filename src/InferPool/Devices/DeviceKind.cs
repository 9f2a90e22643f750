namespace InferPool.Devices;

/// <summary>The kind of hardware a <see cref="Device"/> names.</summary>
public enum DeviceKind
{
    /// <summary>The host CPU (all cores together form one device).</summary>
    Cpu = 0,

    /// <summary>An NVIDIA GPU addressed through CUDA.</summary>
    Cuda = 1,
}
