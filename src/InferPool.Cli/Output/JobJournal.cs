using System.Text.Json;
using System.Text.Json.Serialization;

namespace InferPool.Cli.Output;

/// <summary>
/// The record of a job in its output folder (<c>_inferpool_job.json</c>): what the job is (model, input, output
/// format and columns) and which parts are committed. A part counts only once it is listed here, and it is
/// listed only after it is fully written, flushed and renamed; anything else in the folder named like a part
/// is a leftover of a crash and is discarded on resume.
/// </summary>
internal sealed class JobJournal
{
    public const string FileName = "_inferpool_job.json";

    public int Version { get; init; } = 1;

    public required JobIdentity Job { get; init; }

    public List<CommittedPart> Parts { get; init; } = [];

    public bool Finished { get; set; }

    [JsonIgnore]
    public long CommittedRows => Parts.Sum(p => p.Rows);

    public static string PathIn(string directory) => Path.Combine(directory, FileName);

    /// <summary>Reads the journal in a folder, or null when there is none.</summary>
    /// <exception cref="InvalidDataException">The journal exists but cannot be read.</exception>
    public static JobJournal? Load(string directory)
    {
        var path = PathIn(directory);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), CliJson.Default.JobJournal)
                ?? throw new InvalidDataException($"{path} is empty.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"The job journal {path} is damaged ({ex.Message}); use --force to start the job over.", ex);
        }
    }

    /// <summary>Writes the journal atomically: temporary file, flush to disk, rename, flush the folder.</summary>
    public void Save(string directory)
    {
        Durable.WriteAtomically(PathIn(directory), stream => JsonSerializer.Serialize(stream, this, CliJson.Default.JobJournal));
    }
}

/// <summary>What makes two runs the same job: resuming is allowed only when all of it matches.</summary>
internal sealed record JobIdentity(string Model, string ModelSha256, string Input, string Format, IReadOnlyList<string> Columns)
{
    /// <summary>Why <paramref name="other"/> is not this job, or null when it is.</summary>
    public string? Difference(JobIdentity other)
    {
        if (ModelSha256 != other.ModelSha256)
        {
            return $"it was started with model {Model} (sha256 {ModelSha256[..12]}…), not {other.Model} (sha256 {other.ModelSha256[..12]}…)";
        }

        if (Input != other.Input)
        {
            return $"it was started on input {Input}, not {other.Input}";
        }

        return Format != other.Format || !Columns.SequenceEqual(other.Columns)
            ? $"it writes {Format} parts with columns {string.Join(", ", Columns)}, not {other.Format} with {string.Join(", ", other.Columns)}"
            : null;
    }
}

/// <summary>A part that is complete on disk.</summary>
internal sealed record CommittedPart(string Name, long Rows);
