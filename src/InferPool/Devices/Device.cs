using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace InferPool.Devices;

/// <summary>
/// A place where inference runs: <c>cpu</c>, <c>cuda:0</c>, <c>cuda:1</c>, …
/// </summary>
/// <remarks>The text form (<see cref="ToString"/>) round-trips through <see cref="Parse"/>.</remarks>
public readonly record struct Device
{
    private Device(DeviceKind kind, int index)
    {
        Kind = kind;
        Index = index;
    }

    /// <summary>The host CPU.</summary>
    public static Device Cpu => default;

    /// <summary>The kind of hardware.</summary>
    public DeviceKind Kind { get; }

    /// <summary>The device ordinal for <see cref="DeviceKind.Cuda"/>; always 0 for the CPU.</summary>
    public int Index { get; }

    /// <summary>True for a GPU device.</summary>
    public bool IsGpu => Kind == DeviceKind.Cuda;

    /// <summary>The CUDA device with the given ordinal.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is negative.</exception>
    public static Device Cuda(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        return new Device(DeviceKind.Cuda, index);
    }

    /// <summary>Parses <c>cpu</c> or <c>cuda:N</c> (also <c>gpu:N</c>; case-insensitive).</summary>
    /// <exception cref="FormatException">The text names no device; the message says what is accepted.</exception>
    public static Device Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryParse(text, out var device)
            ? device
            : throw new FormatException($"'{text}' is not a device: use 'cpu' or 'cuda:N' with N a GPU ordinal (0, 1, …).");
    }

    /// <summary>Tries to parse <c>cpu</c> or <c>cuda:N</c>.</summary>
    public static bool TryParse([NotNullWhen(true)] string? text, out Device device)
    {
        device = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        var span = text.AsSpan().Trim();
        if (span.Equals("cpu", StringComparison.OrdinalIgnoreCase))
        {
            device = Cpu;
            return true;
        }

        var colon = span.IndexOf(':');
        if (colon < 0)
        {
            return false;
        }

        var prefix = span[..colon];
        if (!prefix.Equals("cuda", StringComparison.OrdinalIgnoreCase) && !prefix.Equals("gpu", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        if (!int.TryParse(span[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var index))
        {
            return false;
        }

        device = new Device(DeviceKind.Cuda, index);
        return true;
    }

    /// <inheritdoc />
    public override string ToString() => Kind == DeviceKind.Cpu ? "cpu" : string.Create(CultureInfo.InvariantCulture, $"cuda:{Index}");
}
