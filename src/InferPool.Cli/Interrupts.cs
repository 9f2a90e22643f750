namespace InferPool.Cli;

/// <summary>
/// Ctrl+C handling: the first press stops taking new input (in-flight work finishes and is committed);
/// the second stops now.
/// </summary>
internal sealed class Interrupts : IDisposable
{
    private readonly CancellationTokenSource _stopIntake = new();
    private readonly CancellationTokenSource _stopNow = new();

    /// <summary>Signalled by the first Ctrl+C.</summary>
    public CancellationToken StopIntake => _stopIntake.Token;

    /// <summary>Signalled by the second Ctrl+C.</summary>
    public CancellationToken StopNow => _stopNow.Token;

    /// <summary>Hooks Console.CancelKeyPress for this process.</summary>
    public static Interrupts ForConsole()
    {
        var interrupts = new Interrupts();
        Console.CancelKeyPress += (_, e) =>
        {
            if (!interrupts._stopIntake.IsCancellationRequested)
            {
                e.Cancel = true;
                interrupts._stopIntake.Cancel();
                Console.Error.WriteLine("Stopping: finishing the items in flight and committing them (press Ctrl+C again to stop now).");
            }
            else
            {
                e.Cancel = true;
                interrupts._stopNow.Cancel();
            }
        };
        return interrupts;
    }

    public void Dispose()
    {
        _stopIntake.Dispose();
        _stopNow.Dispose();
    }
}
