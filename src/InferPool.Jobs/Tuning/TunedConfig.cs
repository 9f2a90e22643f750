using System.Text.Json;
using System.Text.Json.Serialization;
using InferPool.Devices;
using InferPool.Jobs.Parts;
using Microsoft.Extensions.Logging;

namespace InferPool.Jobs.Tuning;

/// <summary>
/// What tuning found best for a model on a machine, and what it measured; a job takes its devices, threads and
/// batch size unless told otherwise.
/// </summary>
/// <param name="Model">The model's name.</param>
/// <param name="ModelSha256">The model file's SHA-256.</param>
/// <param name="Machine">What the measurements depend on (<see cref="MachineOf"/>).</param>
/// <param name="Devices">The winning replicas per device, in device-selection syntax.</param>
/// <param name="Threads">The winning threads per CPU replica.</param>
/// <param name="Batch">The winning batch size.</param>
/// <param name="ItemsPerSecond">The winner's rate.</param>
/// <param name="Measured">When.</param>
/// <param name="Trials">Every configuration measured.</param>
/// <param name="Version">The file format's version.</param>
/// <param name="PrepareWorkers">The winning prepare workers, when tuning measured with preparation and fewer than the
/// default won; null for the job's default (one per core).</param>
public sealed record TunedConfig(
    string Model,
    string ModelSha256,
    string Machine,
    string Devices,
    int Threads,
    int Batch,
    double ItemsPerSecond,
    DateTimeOffset Measured,
    IReadOnlyList<TunedTrial> Trials,
    int Version = 1,
    int? PrepareWorkers = null)
{
    /// <summary>The name a job looks for in its output folder.</summary>
    public const string FileName = "inferpool.tuned.json";

    /// <summary>Where the config was read from (not saved).</summary>
    [JsonIgnore]
    public string? Source { get; init; }

    /// <summary>Where tuning saves by default and a job looks second: beside the model, <c>ResNet18.tuned.json</c>.</summary>
    /// <param name="modelPath">The model file.</param>
    public static string BesideModel(string modelPath) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelPath))!, Path.GetFileNameWithoutExtension(modelPath) + ".tuned.json");

    /// <summary>What the measurements depend on: cores and GPUs.</summary>
    /// <param name="inventory">The machine's devices.</param>
    public static string MachineOf(IDeviceInventory inventory)
    {
        ArgumentNullException.ThrowIfNull(inventory);
        IEnumerable<string> names = inventory is NvmlDeviceInventory nvml ? nvml.GpuDetails.Select(g => g.Name) : inventory.Gpus.Select(g => "GPU");
        var gpus = inventory.Gpus.Count == 0 ? "no GPU" : string.Join(", ", names.GroupBy(n => n).Select(g => $"{g.Count()} × {g.Key}"));
        return $"{inventory.CpuCores} cores, {gpus}";
    }

    /// <summary>
    /// The one lookup of a tuned config for a model: <paramref name="named"/> when given, else
    /// <see cref="FileName"/> in <paramref name="outputDirectory"/>, else the one <see cref="BesideModel"/>. A config
    /// for another model or another machine is refused when named and ignored, with a warning, when found.
    /// </summary>
    /// <param name="named">A config the user named, or null to look for one.</param>
    /// <param name="outputDirectory">The job's output folder, or null.</param>
    /// <param name="modelPath">The model file.</param>
    /// <param name="modelSha256">The model file's SHA-256.</param>
    /// <param name="inventory">This machine's devices.</param>
    /// <param name="logger">Where the warning about an ignored config goes.</param>
    /// <returns>The config to use, or null.</returns>
    /// <exception cref="FileNotFoundException">The named config does not exist.</exception>
    /// <exception cref="InvalidDataException">The named config is not a tuned config, or is for another model or machine.</exception>
    public static TunedConfig? Find(string? named, string? outputDirectory, string modelPath, string modelSha256, IDeviceInventory inventory, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(logger);
        var path = named ?? new[] { outputDirectory is null ? null : Path.Combine(outputDirectory, FileName), BesideModel(modelPath) }.FirstOrDefault(File.Exists);
        if (path is null)
        {
            return null;
        }

        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The tuned config '{path}' does not exist.", path);
        }

        var config = Load(path) with { Source = Path.GetFullPath(path) };
        var machine = MachineOf(inventory);
        var why = config.ModelSha256 != modelSha256
            ? $"{path} was tuned for model {config.Model} (sha256 {config.ModelSha256[..Math.Min(12, config.ModelSha256.Length)]}…), not this one"
            : config.Machine != machine ? $"{path} was measured on {config.Machine}; this machine has {machine}"
            : null;
        if (why is null)
        {
            return config;
        }

        if (named is not null)
        {
            throw new InvalidDataException($"{why}; tune again here.");
        }

        logger.LogWarning("Ignoring {Why}.", why);
        return null;
    }

    /// <summary>Reads a config.</summary>
    /// <param name="path">The file.</param>
    /// <exception cref="InvalidDataException">The file is not a tuned config.</exception>
    public static TunedConfig Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), JobsJson.Default.TunedConfig)
                ?? throw new InvalidDataException($"{path} is empty.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path} is not a tuned config ({ex.Message}).", ex);
        }
    }

    /// <summary>Writes the file atomically (<see cref="Durable"/>).</summary>
    /// <param name="path">The file.</param>
    /// <param name="cancellationToken">Stops before the file is replaced.</param>
    public Task SaveAsync(string path, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        return Durable.WriteAtomicallyAsync(path, (stream, token) => JsonSerializer.SerializeAsync(stream, this, JobsJson.Default.TunedConfig, token), cancellationToken);
    }
}

/// <summary>One configuration tuning measured.</summary>
/// <param name="Devices">Replicas per device.</param>
/// <param name="Threads">Threads per CPU replica.</param>
/// <param name="Batch">Batch size.</param>
/// <param name="ItemsPerSecond">Its rate.</param>
/// <param name="Measurements">Measurements averaged.</param>
/// <param name="StoppedEarly">Stopped early for being clearly slower.</param>
/// <param name="Oversubscribed">Replicas × threads exceeded the cores.</param>
/// <param name="PrepareWorkers">Prepare workers beside the replicas, when the trial set them; null for the default.</param>
public sealed record TunedTrial(string Devices, int Threads, int Batch, double ItemsPerSecond, int Measurements, bool StoppedEarly, bool Oversubscribed, int? PrepareWorkers = null);
