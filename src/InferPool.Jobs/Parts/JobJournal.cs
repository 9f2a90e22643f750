using System.Text.Json;
using System.Text.Json.Serialization;

namespace InferPool.Jobs.Parts;

/// <summary>
/// The record of a job in its output folder (<c>_inferpool_job.json</c>): what the job is (model, input, output
/// format and columns) and which parts are committed. A part counts only once it is listed here, and it is
/// listed only after it is fully written, flushed and renamed; anything else in the folder named like a part
/// is a leftover of a crash and is discarded on resume.
/// </summary>
public sealed class JobJournal
{
    /// <summary>The journal's file name in an output folder.</summary>
    public const string FileName = "_inferpool_job.json";

    /// <summary>The journal format's version: 2 writes the parts as runs of consecutive parts of the same size (version 1 listed each; both read).</summary>
    public int Version { get; init; } = CurrentVersion;

    private const int CurrentVersion = 2;

    /// <summary>What the job is.</summary>
    public required JobIdentity Job { get; init; }

    /// <summary>The committed parts, in order (in the file, as runs: <see cref="CommittedPartRuns"/>).</summary>
    [JsonConverter(typeof(CommittedPartRuns))]
    public List<CommittedPart> Parts { get; init; } = [];

    /// <summary>True once the job went through its whole input.</summary>
    public bool Finished { get; set; }

    /// <summary>Rows in the committed parts.</summary>
    [JsonIgnore]
    public long CommittedRows => Parts.Sum(p => p.Rows);

    /// <summary>The journal's path in <paramref name="directory"/>.</summary>
    /// <param name="directory">An output folder.</param>
    public static string PathIn(string directory) => Path.Combine(directory, FileName);

    /// <summary>Reads the journal in a folder, or null when there is none.</summary>
    /// <param name="directory">An output folder.</param>
    /// <exception cref="JobFolderException">The journal exists but cannot be read.</exception>
    public static JobJournal? Load(string directory)
    {
        var path = PathIn(directory);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            var journal = JsonSerializer.Deserialize(File.ReadAllBytes(path), JobsJson.Default.JobJournal)
                ?? throw new JobFolderException(JobFolderProblem.DamagedJournal, directory, $"The job journal {path} is empty.");

            // An older journal is written back in the current format.
            return journal.Version >= CurrentVersion ? journal : new JobJournal { Version = CurrentVersion, Job = journal.Job, Parts = journal.Parts, Finished = journal.Finished };
        }
        catch (JsonException ex)
        {
            throw new JobFolderException(JobFolderProblem.DamagedJournal, directory, $"The job journal {path} is damaged ({ex.Message}).", ex);
        }
    }

    /// <summary>Writes the journal atomically (<see cref="Durable"/>).</summary>
    /// <param name="directory">The output folder.</param>
    /// <param name="cancellationToken">Stops before the journal is replaced.</param>
    public Task SaveAsync(string directory, CancellationToken cancellationToken = default) =>
        Durable.WriteAtomicallyAsync(PathIn(directory), (stream, token) => JsonSerializer.SerializeAsync(stream, this, JobsJson.Default.JobJournal, token), cancellationToken);
}

/// <summary>What makes two runs the same job: resuming is allowed only when all of it matches.</summary>
/// <param name="Model">The model's (or worker's) name.</param>
/// <param name="ModelSha256">The model file's SHA-256, or the worker's fingerprint.</param>
/// <param name="Input">The input's full path.</param>
/// <param name="Format">The part format's name.</param>
/// <param name="Columns">The output columns between <c>error</c> and <c>device</c>.</param>
public sealed record JobIdentity(string Model, string ModelSha256, string Input, string Format, IReadOnlyList<string> Columns)
{
    /// <summary>True when <paramref name="other"/> is this job but for its model's fingerprint (a worker whose script changed).</summary>
    /// <param name="other">The job about to run.</param>
    public bool DiffersOnlyInFingerprint(JobIdentity other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return Model == other.Model && ModelSha256 != other.ModelSha256 && Input == other.Input && Format == other.Format && Columns.SequenceEqual(other.Columns);
    }

    /// <summary>Why <paramref name="other"/> is not this job, or null when it is.</summary>
    /// <param name="other">The job about to run.</param>
    public string? Difference(JobIdentity other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (ModelSha256 != other.ModelSha256 && Model == other.Model)
        {
            return $"it was started with {Model} as it was then (fingerprint {ModelSha256[..12]}…); its files have changed since (fingerprint {other.ModelSha256[..12]}…)";
        }

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
/// <param name="Name">Its file name in the output folder.</param>
/// <param name="Rows">Its rows.</param>
public sealed record CommittedPart(string Name, long Rows);
