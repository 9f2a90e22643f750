namespace InferPool.Devices;

/// <summary>
/// Numbers the machine's GPUs as CUDA numbers them for this process. NVML lists every card (in PCI bus order) and
/// ignores <c>CUDA_VISIBLE_DEVICES</c>; CUDA sees only the cards that variable names, numbered in the order it
/// names them. A scheduler (Slurm, Kubernetes) that restricts a job to some cards sets it, so <c>cuda:N</c> must
/// follow it, or ONNX Runtime's device N is another card than the one telemetry watches, and workers escape the
/// restriction.
/// </summary>
public static class GpuNumbering
{
    /// <summary>The cards this process may use, each with its CUDA ordinal.</summary>
    /// <param name="cards">Every card NVML listed, in NVML order (a card NVML could not open is simply absent).</param>
    /// <param name="cudaVisibleDevices">The process's <c>CUDA_VISIBLE_DEVICES</c>, or null when it is not set.</param>
    /// <remarks>
    /// Entries are NVML indexes (<c>0,2</c>) or UUIDs and unique UUID prefixes (<c>GPU-8f3…</c>). As CUDA does, the
    /// list ends at the first entry that names no card; an empty value hides every card.
    /// </remarks>
    public static IReadOnlyList<GpuInfo> Visible(IReadOnlyList<GpuInfo> cards, string? cudaVisibleDevices)
    {
        ArgumentNullException.ThrowIfNull(cards);
        if (cudaVisibleDevices is null)
        {
            return [.. cards.Select((card, ordinal) => card with { Device = Device.Cuda(ordinal) })];
        }

        var visible = new List<GpuInfo>();
        foreach (var entry in cudaVisibleDevices.Split(',', StringSplitOptions.TrimEntries))
        {
            var card = Find(cards, entry);
            if (card is null || visible.Any(v => v.NvmlIndex == card.NvmlIndex))
            {
                break;
            }

            visible.Add(card with { Device = Device.Cuda(visible.Count) });
        }

        return visible;
    }

    /// <summary>
    /// What a worker process pinned to <paramref name="device"/> gets as <c>CUDA_VISIBLE_DEVICES</c>: the card's
    /// UUID where known (it means that card whatever else the worker sees), else the parent's own entry for that
    /// ordinal, else the ordinal. Never more than the parent may use.
    /// </summary>
    /// <param name="device">A GPU in this process's numbering.</param>
    /// <param name="gpus">This process's GPUs (<see cref="NvmlDeviceInventory.GpuDetails"/>), or none.</param>
    /// <param name="cudaVisibleDevices">This process's <c>CUDA_VISIBLE_DEVICES</c>, or null.</param>
    public static string WorkerVisibleDevices(Device device, IReadOnlyList<GpuInfo> gpus, string? cudaVisibleDevices)
    {
        ArgumentNullException.ThrowIfNull(gpus);
        if (gpus.FirstOrDefault(g => g.Device == device)?.Uuid is { } uuid)
        {
            return uuid;
        }

        if (cudaVisibleDevices is not null)
        {
            var entries = cudaVisibleDevices.Split(',', StringSplitOptions.TrimEntries);
            return device.Index < entries.Length ? entries[device.Index] : "";
        }

        return device.Index.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private static GpuInfo? Find(IReadOnlyList<GpuInfo> cards, string entry)
    {
        if (uint.TryParse(entry, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var index))
        {
            return cards.FirstOrDefault(c => c.NvmlIndex == index);
        }

        var matches = entry.Length == 0 ? [] : cards.Where(c => c.Uuid?.StartsWith(entry, StringComparison.OrdinalIgnoreCase) == true).ToList();
        return matches.Count == 1 ? matches[0] : null;
    }
}
