using System.Globalization;

namespace InferPool.Devices;

/// <summary>
/// A device selection as a user writes it, before it is checked against the machine:
/// <c>auto</c>, <c>cpu</c>, <c>cuda</c> (every GPU), <c>cuda:0,1</c>, <c>cuda:0=4,cuda:1=2,cpu</c>.
/// </summary>
/// <remarks>
/// <para>Entries are separated by commas. After a <c>cuda:N</c> entry a bare number names another GPU,
/// so <c>cuda:0,1</c> means <c>cuda:0,cuda:1</c>. <c>=N</c> after an entry gives that entry its own replica
/// count; entries without one take the default passed to <see cref="Resolve(IDeviceInventory, int)"/>.</para>
/// <para><c>auto</c> means every GPU when the machine has any, else the CPU.</para>
/// </remarks>
public sealed class DeviceSpec
{
    private readonly IReadOnlyList<Entry> _entries;

    private DeviceSpec(string text, IReadOnlyList<Entry> entries)
    {
        Text = text;
        _entries = entries;
    }

    /// <summary>The text this selection was parsed from.</summary>
    public string Text { get; }

    /// <summary>Parses a device selection.</summary>
    /// <exception cref="FormatException">The text is not a device selection; the message names the bad part and the syntax.</exception>
    public static DeviceSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        const string Syntax = "use 'auto', 'cpu', 'cuda' (every GPU), or a list such as 'cuda:0,1' or 'cuda:0=2,cpu=1' (=N sets replicas for that device)";
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length == 0 || parts.All(string.IsNullOrEmpty))
        {
            throw new FormatException($"The device selection is empty: {Syntax}.");
        }

        var entries = new List<Entry>();
        var lastWasCuda = false;
        foreach (var raw in parts)
        {
            var part = raw;
            int? replicas = null;
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq >= 0)
            {
                if (!int.TryParse(part.AsSpan(eq + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1)
                {
                    throw new FormatException($"'{raw}' in device selection '{text}' has a bad replica count: after '=' put a whole number of 1 or more.");
                }

                replicas = n;
                part = part[..eq].Trim();
            }

            Entry entry;
            if (part.Equals("auto", StringComparison.OrdinalIgnoreCase))
            {
                entry = new Entry(EntryKind.Auto, default, replicas);
            }
            else if (part.Equals("cuda", StringComparison.OrdinalIgnoreCase) || part.Equals("gpu", StringComparison.OrdinalIgnoreCase))
            {
                entry = new Entry(EntryKind.AllGpus, default, replicas);
            }
            else if (lastWasCuda && int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var ordinal))
            {
                entry = new Entry(EntryKind.Device, Device.Cuda(ordinal), replicas);
            }
            else if (Device.TryParse(part, out var device))
            {
                entry = new Entry(EntryKind.Device, device, replicas);
            }
            else
            {
                throw new FormatException($"'{raw}' in device selection '{text}' is not a device: {Syntax}.");
            }

            lastWasCuda = entry.Kind == EntryKind.Device && entry.Device.IsGpu;
            entries.Add(entry);
        }

        if (entries.Count > 1 && entries.Any(e => e.Kind == EntryKind.Auto))
        {
            throw new FormatException($"'auto' stands alone in a device selection, but '{text}' lists other devices too.");
        }

        return new DeviceSpec(text, entries);
    }

    /// <summary>
    /// Checks the selection against the machine and turns it into a plan.
    /// </summary>
    /// <param name="inventory">What the machine has.</param>
    /// <param name="defaultReplicas">Replicas for each device whose entry gives no <c>=N</c>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="defaultReplicas"/> is less than 1.</exception>
    /// <exception cref="InvalidOperationException">A GPU was asked for that the machine does not have.</exception>
    public ReplicaPlan Resolve(IDeviceInventory inventory, int defaultReplicas = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(defaultReplicas, 1);
        return Resolve(inventory, _ => defaultReplicas);
    }

    /// <summary>
    /// Checks the selection against the machine and turns it into a plan, with a default that depends on the
    /// device (e.g. one replica per core on the CPU, two per GPU) for entries that give no <c>=N</c>.
    /// </summary>
    /// <param name="inventory">What the machine has.</param>
    /// <param name="defaultReplicas">Replicas for a device whose entry gives no <c>=N</c>; at least 1.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="defaultReplicas"/> gives less than 1.</exception>
    /// <exception cref="InvalidOperationException">A GPU was asked for that the machine does not have.</exception>
    public ReplicaPlan Resolve(IDeviceInventory inventory, Func<Device, int> defaultReplicas)
    {
        ArgumentNullException.ThrowIfNull(inventory);
        ArgumentNullException.ThrowIfNull(defaultReplicas);
        var gpus = inventory.Gpus;
        var found = gpus.Count == 0 ? "this machine has no GPU (or none was found)" : $"this machine has {string.Join(", ", gpus)}";
        var allocations = new List<DeviceAllocation>();

        void Add(Device device, int? replicas)
        {
            if (allocations.Any(a => a.Device == device))
            {
                throw new InvalidOperationException($"Device {device} is selected more than once in '{Text}'.");
            }

            var count = replicas ?? defaultReplicas(device);
            ArgumentOutOfRangeException.ThrowIfLessThan(count, 1, nameof(defaultReplicas));
            allocations.Add(new DeviceAllocation(device, count));
        }

        foreach (var entry in _entries)
        {
            switch (entry.Kind)
            {
                case EntryKind.Auto when gpus.Count == 0:
                    Add(Device.Cpu, entry.Replicas);
                    break;
                case EntryKind.Auto:
                case EntryKind.AllGpus:
                    if (gpus.Count == 0)
                    {
                        throw new InvalidOperationException($"'{Text}' asks for every GPU, but {found}. Select the CPU ('cpu') or 'auto' instead.");
                    }

                    foreach (var gpu in gpus)
                    {
                        Add(gpu, entry.Replicas);
                    }

                    break;
                default:
                    if (entry.Device.IsGpu && !gpus.Contains(entry.Device))
                    {
                        throw new InvalidOperationException($"'{Text}' asks for {entry.Device}, but {found}.");
                    }

                    Add(entry.Device, entry.Replicas);
                    break;
            }
        }

        return ReplicaPlan.Create([.. allocations]);
    }

    /// <inheritdoc />
    public override string ToString() => Text;

    private enum EntryKind
    {
        Device,
        AllGpus,
        Auto,
    }

    private readonly record struct Entry(EntryKind Kind, Device Device, int? Replicas);
}
