using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace InferPool.Cluster;

/// <summary>
/// Wakes an idle node, or a follower of a job, as soon as the database says that something changed (PostgreSQL's
/// LISTEN/NOTIFY), instead of at its next poll. Notifications only hurry a poll along: whoever waits also wakes
/// after a timeout of its own, so a lost connection, or a pooler that does not pass notifications on (PgBouncer in
/// transaction mode), makes waiting slower, never wrong. One connection, held while the signals live, listens.
/// </summary>
/// <example>
/// Take the signal before looking, so that a change between the look and the wait is not missed:
/// <code>
/// await using var signals = ClusterSignals.ForProgress(store.Database);
/// while (true)
/// {
///     var changed = signals.Next(jobId);
///     var progress = await store.ProgressAsync(jobId, cancellationToken);
///     if (progress is { Finished: true }) break;
///     await ClusterSignals.WaitAsync(changed, TimeSpan.FromSeconds(1), cancellationToken);
/// }
/// </code>
/// </example>
public sealed partial class ClusterSignals : IAsyncDisposable, IDisposable
{
    /// <summary>Work may be free: a job was submitted or a shard was handed back (no payload).</summary>
    internal const string WorkChannel = "inferpool_work";

    /// <summary>A job's progress changed: a shard was committed, failed or handed back, or the job was cancelled (the payload is the job's id).</summary>
    internal const string ProgressChannel = "inferpool_progress";

    /// <summary>How long the listening connection waits for a notification before it checks that it is still alive.</summary>
    private static readonly TimeSpan KeepAlive = TimeSpan.FromSeconds(30);

    private readonly NpgsqlDataSource _database;
    private readonly string _channel;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _gate = new();
    private readonly Dictionary<string, TaskCompletionSource> _byPayload = new(StringComparer.Ordinal);
    private TaskCompletionSource _any = NewPulse();
    private Task? _listening;
    private bool _disposed;

    private ClusterSignals(NpgsqlDataSource database, string channel, ILogger? logger)
    {
        _database = database;
        _channel = channel;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Signals for idle nodes: a job was submitted, or a shard was handed back.</summary>
    /// <param name="database">The cluster's database.</param>
    /// <param name="logger">Where a lost listening connection is reported (at debug level: polling goes on meanwhile).</param>
    /// <returns>Signals that start listening at the first <see cref="Next"/>.</returns>
    public static ClusterSignals ForWork(NpgsqlDataSource database, ILogger? logger = null) =>
        new(database ?? throw new ArgumentNullException(nameof(database)), WorkChannel, logger);

    /// <summary>Signals for followers of jobs: a job's shard was committed, failed or handed back, or the job was cancelled.</summary>
    /// <param name="database">The cluster's database.</param>
    /// <param name="logger">Where a lost listening connection is reported (at debug level: polling goes on meanwhile).</param>
    /// <returns>Signals that start listening at the first <see cref="Next"/>.</returns>
    public static ClusterSignals ForProgress(NpgsqlDataSource database, ILogger? logger = null) =>
        new(database ?? throw new ArgumentNullException(nameof(database)), ProgressChannel, logger);

    /// <summary>
    /// A task that completes at the next notification after this call (only one about <paramref name="payload"/>,
    /// when given: a job's id for progress), or when listening (re)starts, since notifications may have been missed
    /// until then. It never faults; bound the wait with <see cref="WaitAsync"/>.
    /// </summary>
    /// <param name="payload">The notification to wait for, or null for any.</param>
    /// <returns>The signal.</returns>
    /// <exception cref="ObjectDisposedException">The signals were disposed.</exception>
    public Task Next(string? payload = null)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _listening ??= Task.Run(() => ListenAsync(_stop.Token));
            if (payload is null)
            {
                return _any.Task;
            }

            if (!_byPayload.TryGetValue(payload, out var pulse))
            {
                _byPayload[payload] = pulse = NewPulse();
            }

            return pulse.Task;
        }
    }

    /// <summary>Waits until <paramref name="signal"/> completes or <paramref name="timeout"/> passes, whichever is first.</summary>
    /// <param name="signal">A signal from <see cref="Next"/>.</param>
    /// <param name="timeout">The longest wait: the poll that the signal hurries along.</param>
    /// <param name="cancellationToken">Stops the wait.</param>
    /// <returns>True when the signal came, false when the time ran out.</returns>
    public static async Task<bool> WaitAsync(Task signal, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(signal);
        try
        {
            await signal.WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <summary>Stops listening and gives the connection back.</summary>
    /// <returns>A task that completes when the listening connection is closed.</returns>
    public async ValueTask DisposeAsync()
    {
        Task? listening;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            listening = _listening;
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        if (listening is not null)
        {
            await listening.ConfigureAwait(false);
        }

        _stop.Dispose();
    }

    /// <summary>Stops listening and gives the connection back, waiting for it.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private static TaskCompletionSource NewPulse() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Wakes those waiting for any notification and for this <paramref name="payload"/>; null wakes every waiter.</summary>
    private void Pulse(string? payload)
    {
        TaskCompletionSource any;
        List<TaskCompletionSource> ones = [];
        lock (_gate)
        {
            any = _any;
            _any = NewPulse();
            if (payload is null)
            {
                ones.AddRange(_byPayload.Values);
                _byPayload.Clear();
            }
            else if (_byPayload.Remove(payload, out var one))
            {
                ones.Add(one);
            }
        }

        any.TrySetResult();
        foreach (var one in ones)
        {
            one.TrySetResult();
        }
    }

    /// <summary>Holds one connection that listens on the channel, and opens another (backing off) when it is lost.</summary>
    private async Task ListenAsync(CancellationToken stop)
    {
        var backOff = TimeSpan.FromMilliseconds(100);
        while (!stop.IsCancellationRequested)
        {
            try
            {
                var connection = await _database.OpenConnectionAsync(stop).ConfigureAwait(false);
                await using (connection.ConfigureAwait(false))
                {
                    connection.Notification += (_, e) => Pulse(_channel == ProgressChannel ? e.Payload : null);
                    using (var listen = new NpgsqlCommand($"LISTEN {_channel}", connection))
                    {
                        await listen.ExecuteNonQueryAsync(stop).ConfigureAwait(false);
                    }

                    // Whatever changed before the LISTEN took effect was not notified: every waiter looks again.
                    Pulse(null);
                    backOff = TimeSpan.FromMilliseconds(100);
                    while (true)
                    {
                        if (!await connection.WaitAsync(KeepAlive, stop).ConfigureAwait(false))
                        {
                            // Quiet for a while: make sure the connection is alive (a dropped one would wait for ever).
                            using var ping = new NpgsqlCommand("SELECT 1", connection);
                            await ping.ExecuteScalarAsync(stop).ConfigureAwait(false);
                        }
                    }
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is NpgsqlException or TimeoutException or IOException or SocketException or InvalidOperationException)
            {
                LogNotListening(_logger, _channel, ex.Message, backOff.TotalSeconds);
                try
                {
                    await Task.Delay(backOff, stop).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                backOff = TimeSpan.FromTicks(Math.Min(backOff.Ticks * 2, TimeSpan.FromSeconds(10).Ticks));
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Not listening on {Channel} ({Reason}); polling alone until a new connection listens, in {Seconds} s")]
    private static partial void LogNotListening(ILogger logger, string channel, string reason, double seconds);
}
