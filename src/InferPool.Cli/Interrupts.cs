using System.Globalization;
using System.Runtime.InteropServices;

namespace InferPool.Cli;

/// <summary>
/// Stop signals for this process. For a command that drains (<see cref="DrainWithin"/>: run, node), the first Ctrl+C
/// (SIGINT) or SIGTERM (what <c>docker stop</c>, systemd and Kubernetes send) stops taking new input: in-flight work
/// finishes and is committed, within the drain time; a second signal, or the drain time running out, stops now.
/// Either way the job stays resumable. For any other command (tune, bench, status) the first signal stops now.
/// </summary>
internal sealed class Interrupts : IDisposable
{
    private readonly CancellationTokenSource _stopIntake = new();
    private readonly CancellationTokenSource _stopNow;
    private readonly TextWriter _errors;
    private readonly List<PosixSignalRegistration> _registrations = [];
    private readonly Lock _lock = new();
    private TimeSpan _drainTimeout = Timeout.InfiniteTimeSpan;
    private int _received;

    /// <summary>Creates the handling; <see cref="ForConsole"/> hooks it to this process's signals.</summary>
    public Interrupts(TextWriter errors, TimeProvider time)
    {
        _errors = errors;
        _stopNow = new CancellationTokenSource(Timeout.InfiniteTimeSpan, time);
    }

    /// <summary>Signalled by the first stop signal.</summary>
    public CancellationToken StopIntake => _stopIntake.Token;

    /// <summary>Signalled by the second stop signal, or when the drain time after the first has passed.</summary>
    public CancellationToken StopNow => _stopNow.Token;

    /// <summary>The first stop signal received, or null.</summary>
    public PosixSignal? Signal { get; private set; }

    /// <summary>The exit code for a run these signals stopped: 143 after SIGTERM, 130 after Ctrl+C.</summary>
    public int ExitCode => Signal == PosixSignal.SIGTERM ? ExitCodes.Terminated : ExitCodes.Interrupted;

    /// <summary>What stopped the run, in words: "SIGTERM" or "Ctrl+C".</summary>
    public string StoppedBy => Signal == PosixSignal.SIGTERM ? "SIGTERM" : "Ctrl+C";

    /// <summary>Handles SIGINT and SIGTERM for this process.</summary>
    public static Interrupts ForConsole()
    {
        var interrupts = new Interrupts(Console.Error, TimeProvider.System);
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
        {
            interrupts._registrations.Add(PosixSignalRegistration.Create(signal, context =>
            {
                context.Cancel = true;
                interrupts.Receive(context.Signal);
            }));
        }

        return interrupts;
    }

    /// <summary>Makes the first stop signal graceful: stop now only once <paramref name="timeout"/> has passed after it.</summary>
    public void DrainWithin(TimeSpan timeout)
    {
        lock (_lock)
        {
            _drainTimeout = timeout;
            if (_received > 0)
            {
                _stopNow.CancelAfter(timeout);
            }
        }
    }

    /// <summary>A stop signal arrived.</summary>
    public void Receive(PosixSignal signal)
    {
        lock (_lock)
        {
            if (++_received > 1)
            {
                _stopNow.Cancel();
                return;
            }

            Signal = signal;
            _stopIntake.Cancel();
            if (_drainTimeout == Timeout.InfiniteTimeSpan)
            {
                // Nothing to drain: stop now.
                _stopNow.Cancel();
                return;
            }

            _stopNow.CancelAfter(_drainTimeout);
        }

        var within = string.Create(CultureInfo.InvariantCulture, $" within {_drainTimeout.TotalSeconds:0.#} s");
        _errors.WriteLine($"Stopping ({StoppedBy}): finishing the items in flight and committing them{within} (press Ctrl+C or send SIGTERM again to stop now).");
    }

    public void Dispose()
    {
        foreach (var registration in _registrations)
        {
            registration.Dispose();
        }

        _stopIntake.Dispose();
        _stopNow.Dispose();
    }
}
