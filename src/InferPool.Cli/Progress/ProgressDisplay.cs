using System.Globalization;
using InferPool.Diagnostics;
using Spectre.Console;

namespace InferPool.Cli.Progress;

/// <summary>
/// Shows a job's progress while it runs: a live bar with items/s, ETA, failures and per-device activity
/// on a terminal; a plain line every few seconds otherwise (CI logs); nothing with --quiet. Public so its line
/// format is tested directly, without reaching into the tool's internals.
/// </summary>
/// <param name="console">Where progress goes.</param>
/// <param name="timeProvider">The clock for refreshes.</param>
/// <param name="quiet">Show nothing.</param>
public sealed class ProgressDisplay(IAnsiConsole console, TimeProvider timeProvider, bool quiet)
{
    private static readonly TimeSpan LiveRefresh = TimeSpan.FromMilliseconds(250);
    private static readonly TimeSpan PlainInterval = TimeSpan.FromSeconds(5);

    /// <summary>Runs <paramref name="job"/> while showing <paramref name="monitor"/>; <paramref name="total"/> is read when known.</summary>
    /// <typeparam name="T">The job's result.</typeparam>
    /// <param name="job">Starts the job.</param>
    /// <param name="monitor">The job's live counters.</param>
    /// <param name="total">The number of items, once known.</param>
    /// <param name="gpus">GPU usage sampled so far.</param>
    public async Task<T> RunAsync<T>(Func<Task<T>> job, PoolMonitor monitor, Func<long?> total, Func<IReadOnlyList<GpuUsage>>? gpus = null)
    {
        if (quiet)
        {
            return await job().ConfigureAwait(false);
        }

        gpus ??= () => [];
        return console.Profile.Capabilities.Interactive
            ? await LiveAsync(job, monitor, total, gpus).ConfigureAwait(false)
            : await PlainAsync(job, monitor, total, gpus).ConfigureAwait(false);
    }

    /// <summary>
    /// One line of progress, e.g. <c>12/20 (60%) · 8.4 items/s · 0 failed · ETA 1s · cpu 2/2 busy 97%</c>; a GPU
    /// also shows its sampled utilisation and memory (<c>cuda:0 2/2 busy 95% · GPU 87% 12.3/80.0 GiB</c>).
    /// </summary>
    /// <param name="s">The pool's counters.</param>
    /// <param name="total">The number of items, once known.</param>
    /// <param name="gpus">GPU usage sampled so far.</param>
    public static string Line(PoolSnapshot s, long? total, IReadOnlyList<GpuUsage>? gpus = null)
    {
        var done = s.Completed;
        var parts = new List<string>
        {
            total is { } t ? string.Create(CultureInfo.InvariantCulture, $"{done}/{t} ({(t == 0 ? 100 : 100.0 * done / t):F0}%)") : $"{done} done",
            string.Create(CultureInfo.InvariantCulture, $"{s.ItemsPerSecond:F1} items/s"),
            $"{s.Failed} failed",
        };
        if (total is { } all && s.ItemsPerSecond > 0 && done < all)
        {
            parts.Add($"ETA {Duration(TimeSpan.FromSeconds((all - done) / s.ItemsPerSecond))}");
        }

        parts.AddRange(s.Devices.Select(d => string.Create(
            CultureInfo.InvariantCulture,
            $"{d.Device} {d.ReplicasAlive}/{d.ReplicasPlanned} busy {d.BusyFraction:P0}{(d.Removed ? " (removed)" : "")}{Gpu(gpus?.FirstOrDefault(g => g.Device == d.Device))}")));
        return string.Join(" · ", parts);
    }

    private static string Gpu(GpuUsage? usage) => usage?.Latest is { } r
        ? string.Create(CultureInfo.InvariantCulture, $" · GPU {(r.UtilizationPercent is { } u ? $"{u}%" : "?")} {r.UsedMemoryBytes / Gib:F1}/{r.TotalMemoryBytes / Gib:F1} GiB")
        : "";

    private const double Gib = 1024.0 * 1024 * 1024;

    /// <summary>A duration as a person reads it: <c>4.2s</c>, <c>3:07</c>, <c>1:02:03</c>.</summary>
    /// <param name="t">The duration.</param>
    public static string Duration(TimeSpan t) =>
        t.TotalHours >= 1 ? t.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture)
        : t.TotalMinutes >= 1 ? t.ToString(@"m\:ss", CultureInfo.InvariantCulture)
        : string.Create(CultureInfo.InvariantCulture, $"{t.TotalSeconds:F1}s");

    private async Task<T> LiveAsync<T>(Func<Task<T>> job, PoolMonitor monitor, Func<long?> total, Func<IReadOnlyList<GpuUsage>> gpus)
    {
        T result = default!;
        await console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var bar = ctx.AddTask("starting replicas", autoStart: true, maxValue: 1);
                bar.IsIndeterminate = true;
                var running = job();
                while (!running.IsCompleted)
                {
                    Update(bar, monitor.Snapshot(), total(), gpus());
                    await Task.WhenAny(running, Task.Delay(LiveRefresh, timeProvider)).ConfigureAwait(false);
                }

                Update(bar, monitor.Snapshot(), total(), gpus());
                result = await running.ConfigureAwait(false);
            }).ConfigureAwait(false);
        return result;
    }

    private static void Update(ProgressTask bar, PoolSnapshot s, long? total, IReadOnlyList<GpuUsage> gpus)
    {
        bar.Description = Markup.Escape(Line(s, total, gpus));
        if (total is { } t)
        {
            bar.IsIndeterminate = false;
            bar.MaxValue = Math.Max(1, t);
            bar.Value = Math.Min(s.Completed, bar.MaxValue);
        }
    }

    private async Task<T> PlainAsync<T>(Func<Task<T>> job, PoolMonitor monitor, Func<long?> total, Func<IReadOnlyList<GpuUsage>> gpus)
    {
        var running = job();
        while (!running.IsCompleted)
        {
            await Task.WhenAny(running, Task.Delay(PlainInterval, timeProvider)).ConfigureAwait(false);
            if (!running.IsCompleted)
            {
                console.WriteLine(Line(monitor.Snapshot(), total(), gpus()));
            }
        }

        return await running.ConfigureAwait(false);
    }
}
