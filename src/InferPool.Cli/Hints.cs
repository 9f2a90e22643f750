using InferPool.Jobs.Parts;

namespace InferPool.Cli;

/// <summary>The library says what is wrong; the command line adds which option puts it right.</summary>
internal static class Hints
{
    /// <summary>A job-folder problem with the options that resolve it.</summary>
    public static string For(JobFolderException ex) => ex.Problem switch
    {
        JobFolderProblem.FilesChanged => $"{ex.Message} Use --resume to resume with the changed files anyway, --force to start over, or choose another -o.",
        JobFolderProblem.AnotherJob or JobFolderProblem.PartsWithoutJournal => $"{ex.Message} Use --force to start over, or choose another -o.",
        JobFolderProblem.NothingToResume => $"--resume: {ex.Message}",
        _ => $"{ex.Message} Use --force to start the job over.",
    };
}
