namespace InferPool.Jobs.Parts;

/// <summary>What is wrong with an output folder that a job cannot start or resume in.</summary>
public enum JobFolderProblem
{
    /// <summary>The folder's journal records another job (other model, input, format or columns).</summary>
    AnotherJob,

    /// <summary>The folder's journal records this job, but its model's files have changed since (a worker's edited script); resuming must be asked for.</summary>
    FilesChanged,

    /// <summary>The folder holds part files but no journal, so they cannot be resumed.</summary>
    PartsWithoutJournal,

    /// <summary>Resuming was required, but the folder holds no job.</summary>
    NothingToResume,

    /// <summary>The journal cannot be read.</summary>
    DamagedJournal,

    /// <summary>A part the journal lists as committed is missing or unreadable.</summary>
    DamagedPart,
}

/// <summary>
/// An output folder a job cannot use as it is. Nothing was run and nothing in the folder was changed; starting the
/// job over (<see cref="JobOptions.Force"/>) or choosing another folder resolves every <see cref="JobFolderProblem"/>.
/// </summary>
public sealed class JobFolderException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="problem">What is wrong.</param>
    /// <param name="directory">The output folder.</param>
    /// <param name="message">The reason, naming the folder.</param>
    /// <param name="inner">The underlying error, if any.</param>
    public JobFolderException(JobFolderProblem problem, string directory, string message, Exception? inner = null)
        : base(message, inner)
    {
        Problem = problem;
        Directory = directory;
    }

    /// <summary>Creates an exception with a message only (for serializers and tests).</summary>
    public JobFolderException()
        : this(JobFolderProblem.DamagedJournal, "", "The output folder cannot be used.")
    {
    }

    /// <summary>Creates an exception with a message only.</summary>
    /// <param name="message">The reason.</param>
    public JobFolderException(string message)
        : this(JobFolderProblem.DamagedJournal, "", message)
    {
    }

    /// <summary>Creates an exception with a message and its cause.</summary>
    /// <param name="message">The reason.</param>
    /// <param name="inner">The cause.</param>
    public JobFolderException(string message, Exception inner)
        : this(JobFolderProblem.DamagedJournal, "", message, inner)
    {
    }

    /// <summary>What is wrong.</summary>
    public JobFolderProblem Problem { get; }

    /// <summary>The output folder.</summary>
    public string Directory { get; }
}
