using System.Text.Json;
using InferPool.Cli.Output;
using InferPool.Devices;

namespace InferPool.Cli.Tuning;

/// <summary>
/// What <c>inferpool tune</c> found best for a model on a machine, and what it measured; <c>inferpool run</c>
/// takes its devices, threads and batch size unless the command line says otherwise.
/// </summary>
internal sealed record TunedConfig(
    string Model,
    string ModelSha256,
    string Machine,
    string Devices,
    int Threads,
    int Batch,
    double ItemsPerSecond,
    DateTimeOffset Measured,
    IReadOnlyList<TunedTrial> Trials,
    int Version = 1)
{
    /// <summary>Where the config was read from (not saved).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string? Source { get; init; }

    /// <summary>The name run looks for in the output folder.</summary>
    public const string FileName = "inferpool.tuned.json";

    /// <summary>Where tune saves by default and run looks second: beside the model, <c>ResNet18.tuned.json</c>.</summary>
    public static string BesideModel(string modelPath) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelPath))!, Path.GetFileNameWithoutExtension(modelPath) + ".tuned.json");

    /// <summary>What the measurements depend on: cores and GPUs.</summary>
    public static string MachineOf(IDeviceInventory inventory)
    {
        ArgumentNullException.ThrowIfNull(inventory);
        IEnumerable<string> names = inventory is NvmlDeviceInventory nvml ? nvml.GpuDetails.Select(g => g.Name) : inventory.Gpus.Select(g => "GPU");
        var gpus = inventory.Gpus.Count == 0 ? "no GPU" : string.Join(", ", names.GroupBy(n => n).Select(g => $"{g.Count()} × {g.Key}"));
        return $"{inventory.CpuCores} cores, {gpus}";
    }

    /// <exception cref="InvalidDataException">The file is not a tuned config.</exception>
    public static TunedConfig Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), CliJson.Default.TunedConfig)
                ?? throw new InvalidDataException($"{path} is empty.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path} is not a tuned config written by 'inferpool tune' ({ex.Message}).", ex);
        }
    }

    /// <summary>Writes the file atomically (temporary file, flush, rename).</summary>
    public void Save(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        Durable.WriteAtomically(path, stream => JsonSerializer.Serialize(stream, this, CliJson.Default.TunedConfig));
    }
}

/// <summary>One configuration tune measured.</summary>
internal sealed record TunedTrial(string Devices, int Threads, int Batch, double ItemsPerSecond, int Measurements, bool StoppedEarly, bool Oversubscribed);
