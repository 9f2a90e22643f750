namespace InferPool.Cli;

/// <summary>The documented exit codes of <c>inferpool</c>.</summary>
internal static class ExitCodes
{
    /// <summary>Every item succeeded.</summary>
    public const int Ok = 0;

    /// <summary>The job ran, but some items failed; they are listed in the summary and in the output with reasons.</summary>
    public const int ItemsFailed = 1;

    /// <summary>The job could not run: bad arguments, a missing or corrupt model, an unreadable input, no device.</summary>
    public const int JobFailed = 2;

    /// <summary>Stopped by Ctrl+C (SIGINT); what finished is committed.</summary>
    public const int Interrupted = 130;

    /// <summary>Stopped by SIGTERM; what finished is committed.</summary>
    public const int Terminated = 143;
}
