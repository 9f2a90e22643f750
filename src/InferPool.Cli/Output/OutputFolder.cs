using System.Text.Json;
using Parquet.Serialization;

namespace InferPool.Cli.Output;

/// <summary>
/// Opens a job's output folder: starts a new job, or resumes the unfinished job recorded there (the default
/// when model, input and output format match), discarding torn leftovers and collecting the keys already
/// committed so they are not done twice.
/// </summary>
internal static class OutputFolder
{
    /// <summary>What a run starts from.</summary>
    /// <param name="Journal">The journal to extend.</param>
    /// <param name="CommittedKeys">Keys already in committed parts: skipped by this run.</param>
    /// <param name="Resumed">True when an earlier run of the same job was found.</param>
    /// <param name="Discarded">Leftover files (torn or uncommitted parts) that were removed.</param>
    /// <param name="CommittedFailures">Rows with status failed among the committed parts.</param>
    public sealed record Start(JobJournal Journal, IReadOnlySet<string> CommittedKeys, bool Resumed, int Discarded, long CommittedFailures = 0);

    /// <exception cref="InvalidOperationException">The folder holds another job or unknown parts, and <paramref name="force"/> is off.</exception>
    /// <exception cref="InvalidDataException">The journal or a committed part is damaged or missing.</exception>
    public static async Task<Start> OpenAsync(string directory, JobIdentity identity, bool force, bool requireResume, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(directory);
        if (force)
        {
            File.Delete(JobJournal.PathIn(directory));
            foreach (var file in Leftovers(directory, committed: None))
            {
                File.Delete(file);
            }
        }

        var journal = JobJournal.Load(directory);
        if (journal is null)
        {
            var stray = Leftovers(directory, committed: None).Where(f => !f.EndsWith(".tmp", StringComparison.Ordinal)).ToList();
            if (stray.Count > 0)
            {
                throw new InvalidOperationException(
                    $"The output folder {directory} holds {stray.Count} part file(s) but no job journal, so they cannot be resumed; use --force to replace them, or choose another -o.");
            }

            if (requireResume)
            {
                throw new InvalidOperationException($"--resume: the output folder {directory} holds no job to resume.");
            }

            var fresh = new JobJournal { Job = identity };
            var removed = Discard(directory, committed: None);
            fresh.Save(directory);
            return new Start(fresh, new HashSet<string>(StringComparer.Ordinal), Resumed: false, removed);
        }

        if (journal.Job.Difference(identity) is { } difference)
        {
            throw new InvalidOperationException(
                $"The output folder {directory} holds another job: {difference}. Use --force to start over, or choose another -o.");
        }

        var committed = journal.Parts.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var discarded = Discard(directory, committed);
        var keys = new HashSet<string>(StringComparer.Ordinal);
        long failures = 0;
        foreach (var part in journal.Parts)
        {
            var path = Path.Combine(directory, part.Name);
            if (!File.Exists(path))
            {
                throw new InvalidDataException($"Committed part {path} is missing; use --force to start the job over.");
            }

            await foreach (var (key, ok) in ReadKeysAsync(path, cancellationToken).ConfigureAwait(false))
            {
                keys.Add(key);
                failures += ok ? 0 : 1;
            }
        }

        return new Start(journal, keys, Resumed: true, discarded, failures);
    }

    /// <summary>The key and status of each row of a part.</summary>
    public static async IAsyncEnumerable<(string Key, bool Ok)> ReadKeysAsync(string part, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        if (part.EndsWith(".parquet", StringComparison.Ordinal))
        {
            var stream = File.OpenRead(part);
            await using (stream.ConfigureAwait(false))
            {
                var data = await ParquetSerializer.DeserializeUntypedAsync(stream, cancellationToken: cancellationToken).ConfigureAwait(false);
                foreach (var row in data.Data)
                {
                    yield return ((string)row["key"]!, (string?)row["status"] == "ok");
                }
            }

            yield break;
        }

        foreach (var line in File.ReadLines(part))
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var doc = JsonDocument.Parse(line);
            yield return (doc.RootElement.GetProperty("key").GetString()!, doc.RootElement.GetProperty("status").GetString() == "ok");
        }
    }

    private static readonly IReadOnlySet<string> None = new HashSet<string>();

    private static int Discard(string directory, IReadOnlySet<string> committed)
    {
        var removed = 0;
        foreach (var file in Leftovers(directory, committed))
        {
            File.Delete(file);
            removed++;
        }

        return removed;
    }

    /// <summary>Files named like parts (or their temporaries) that no journal lists.</summary>
    private static List<string> Leftovers(string directory, IReadOnlySet<string> committed) =>
        Directory.EnumerateFiles(directory, PartWriter.PartPrefix + "*")
            .Where(f => !committed.Contains(Path.GetFileName(f)))
            .ToList();
}
