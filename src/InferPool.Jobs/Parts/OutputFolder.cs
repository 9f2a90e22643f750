namespace InferPool.Jobs.Parts;

/// <summary>
/// Opens a job's output folder: starts a new job, or resumes the unfinished job recorded there (the default
/// when model, input and output format match), discarding torn leftovers and collecting the keys already
/// committed so they are not done twice.
/// </summary>
public static class OutputFolder
{
    /// <summary>What a run starts from.</summary>
    /// <param name="Journal">The journal to extend.</param>
    /// <param name="CommittedKeys">Keys already in committed parts: skipped by this run (disposed with the start).</param>
    /// <param name="Resumed">True when an earlier run of the same job was found.</param>
    /// <param name="Discarded">Leftover files (torn or uncommitted parts) that were removed.</param>
    /// <param name="CommittedFailures">Rows with status failed among the committed parts.</param>
    public sealed record Start(JobJournal Journal, CommittedKeys CommittedKeys, bool Resumed, int Discarded, long CommittedFailures = 0) : IDisposable
    {
        /// <summary>Gives back what the committed keys hold on disk.</summary>
        public void Dispose() => CommittedKeys.Dispose();
    }

    /// <summary>Opens <paramref name="directory"/> for the job <paramref name="identity"/>, creating it if needed.</summary>
    /// <param name="directory">The output folder.</param>
    /// <param name="identity">The job about to run.</param>
    /// <param name="force">Start over: remove the journal and every part first.</param>
    /// <param name="requireResume">Fail unless there is a job to resume; resume it even when only its model's fingerprint changed (a worker's edited script).</param>
    /// <param name="format">The job's part format, which reads committed parts back.</param>
    /// <param name="cancellationToken">Stops the opening.</param>
    /// <exception cref="JobFolderException">The folder holds another job, unknown parts, a damaged journal or part, or (with <paramref name="requireResume"/>) no job.</exception>
    public static async Task<Start> OpenAsync(string directory, JobIdentity identity, bool force, bool requireResume, OutputFormat format, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(identity);
        ArgumentNullException.ThrowIfNull(format);
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
                throw new JobFolderException(
                    JobFolderProblem.PartsWithoutJournal,
                    directory,
                    $"The output folder {directory} holds {stray.Count} part file(s) but no job journal, so they cannot be resumed.");
            }

            if (requireResume)
            {
                throw new JobFolderException(JobFolderProblem.NothingToResume, directory, $"The output folder {directory} holds no job to resume.");
            }

            var fresh = new JobJournal { Job = identity };
            var removed = Discard(directory, committed: None);
            await fresh.SaveAsync(directory, cancellationToken).ConfigureAwait(false);
            return new Start(fresh, new CommittedKeys(directory), Resumed: false, removed);
        }

        var difference = journal.Job.Difference(identity);
        if (difference is not null && requireResume && journal.Job.DiffersOnlyInFingerprint(identity))
        {
            // Same model name, input and format, but its files changed (a worker's script): resume anyway, as asked,
            // and record the new fingerprint so later runs of the same command match.
            journal = new JobJournal { Version = journal.Version, Job = identity, Parts = journal.Parts, Finished = journal.Finished };
            await journal.SaveAsync(directory, cancellationToken).ConfigureAwait(false);
        }
        else if (difference is not null)
        {
            var problem = journal.Job.DiffersOnlyInFingerprint(identity) ? JobFolderProblem.FilesChanged : JobFolderProblem.AnotherJob;
            throw new JobFolderException(problem, directory, $"The output folder {directory} holds another job: {difference}.");
        }

        var committed = journal.Parts.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        var discarded = Discard(directory, committed);
        var keys = new CommittedKeys(directory);
        long failures = 0;
        foreach (var part in journal.Parts)
        {
            var path = Path.Combine(directory, part.Name);
            if (!File.Exists(path))
            {
                throw new JobFolderException(JobFolderProblem.DamagedPart, directory, $"Committed part {path} is missing.");
            }

            try
            {
                await foreach (var (key, ok) in (OutputFormat.ForFile(path) ?? format).ReadKeysAsync(path, cancellationToken).ConfigureAwait(false))
                {
                    keys.Add(key);
                    failures += ok ? 0 : 1;
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                keys.Dispose();
                throw new JobFolderException(JobFolderProblem.DamagedPart, directory, $"Committed part {path} cannot be read ({ex.Message}).", ex);
            }
        }

        return new Start(journal, keys, Resumed: true, discarded, failures);
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
