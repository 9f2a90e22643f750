using System.Globalization;
using InferPool.Jobs;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using Spectre.Console;

namespace InferPool.Cli.Progress;

/// <summary>Prints a job's summary: counts and speed, each device's share, memory, failures by reason, GPUs, where the output is.</summary>
internal sealed class RunSummary(IAnsiConsole console, TextWriter errors)
{
    public void Print(JobOptions job, JobSummary s, string stoppedBy)
    {
        var output = Path.GetFullPath(job.OutputDirectory);
        if (s.AlreadyComplete)
        {
            console.WriteLine(
                $"Nothing to do: the job in {output} is already complete ({s.Skipped} item(s){(s.FailedEarlier > 0 ? $", {s.FailedEarlier} of them failed" : "")}). Use --force to run it again.");
            return;
        }

        var onnx = job.Engine is not WorkerEngine;
        console.WriteLine();
        if (s.Items == 0 && s.Skipped == 0 && !s.Interrupted)
        {
            var what = onnx ? $"image files ({string.Join(" ", InputSource.ImageExtensions.Order(StringComparer.Ordinal))})" : "files";
            errors.WriteLine($"inferpool: warning: {job.Input.Description} holds no inputs; a folder is searched for {what}.");
        }

        if (s.Resumed)
        {
            console.WriteLine($"Resumed the job in {output}: {s.Skipped} item(s) were already committed and were skipped{(s.FailedEarlier > 0 ? $" ({s.FailedEarlier} of the committed rows are failures)" : "")}{(s.Discarded > 0 ? $"; {s.Discarded} uncommitted leftover file(s) discarded" : "")}.");
        }

        console.WriteLine($"{(s.Interrupted || s.StoppedOnFailure ? "Stopped early" : "Done")}: {s.Items} items, {s.Items - s.Failed} ok, {s.Failed} failed in {ProgressDisplay.Duration(s.Elapsed)} ({s.ItemsPerSecond:F1} items/s).");
        if (s.Truncated > 0)
        {
            console.WriteLine($"  {s.Truncated} item(s) were longer than the model takes and were cut to fit (their column truncated is true).");
        }

        foreach (var d in s.Final.Devices)
        {
            var share = s.Items == 0 ? 0 : (double)d.Items / s.Items;
            var replicas = s.Replicas.Where(r => r.Replica.StartsWith(d.Device + "#", StringComparison.Ordinal)).ToList();
            var threads = replicas.Count == 0 || !onnx ? "" : $" × {replicas[0].Detail}";
            console.WriteLine($"  {d.Device}: {d.Items} items ({share:P0}), {d.ReplicasPlanned} replica(s){threads}, busy {d.BusyFraction:P0}{(d.Faults > 0 ? $", {d.Faults} replica fault(s)" : "")}{(d.Removed ? ", removed" : "")}");
        }

        if (s.Final.Prepare is { } prepare)
        {
            var waited = prepare.ReplicaWaits == 0
                ? "the replicas never waited on it"
                : string.Create(CultureInfo.InvariantCulture, $"the replicas waited on it {prepare.ReplicaWaits} time(s), {ProgressDisplay.Duration(prepare.ReplicaWaitTime)} in all");
            console.WriteLine($"  Preparation: at most {prepare.MostWorkers} of {prepare.WorkerLimit} worker(s) ran at once; {waited}; it was ahead (queue full) {prepare.QueueFull} time(s).");
        }

        if (s.Replicas.Count > 0)
        {
            var each = string.Join(", ", s.Replicas.Select(r => r.ResidentBytes is { } bytes ? string.Create(CultureInfo.InvariantCulture, $"{r.Replica} {bytes / (1024.0 * 1024):F0} MB") : $"{r.Replica} unknown"));
            var how = onnx ? "pre-packed weights shared between CPU replicas; what replicas built side by side took is divided among them" : "each worker process with its children once its model was loaded, shared pages divided among their sharers (PSS)";
            console.WriteLine($"  Resident memory per replica: {each} ({how}).");
        }

        if (s.Failed > 0)
        {
            console.WriteLine($"Failures by reason: {string.Join(", ", s.FailuresByReason.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} × {kv.Value}"))}");
            foreach (var (key, reason) in s.FirstFailures)
            {
                console.WriteLine($"  {key}: {reason}");
            }

            if (s.Failed > s.FirstFailures.Count)
            {
                console.WriteLine($"  … and {s.Failed - s.FirstFailures.Count} more (status = 'failed' in the output).");
            }

            if (s.FailuresByReason.ContainsKey("InvalidOutput"))
            {
                console.WriteLine("  Hint: --worker-output json keeps any JSON a worker returns.");
            }
        }

        foreach (var gpu in s.Gpus)
        {
            var util = gpu.MeanUtilizationPercent is { } u ? string.Create(CultureInfo.InvariantCulture, $"mean utilisation {u:F0}%") : "utilisation not reported";
            var total = gpu.Latest is { } r ? string.Create(CultureInfo.InvariantCulture, $" of {r.TotalMemoryBytes / (1024.0 * 1024 * 1024):F1}") : "";
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {gpu.Device}: {util}, peak memory in use {gpu.PeakUsedBytes / (1024.0 * 1024 * 1024):F1}{total} GiB ({gpu.Samples} samples, about one a second)."));
        }

        foreach (var note in s.Notes)
        {
            console.WriteLine($"  Note: {note}");
        }

        using (var self = System.Diagnostics.Process.GetCurrentProcess())
        {
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  Peak resident memory of the process: {self.PeakWorkingSet64 / (1024.0 * 1024):F0} MB."));
        }

        console.WriteLine($"Output: {output} ({s.Parts.Count} {job.Format.Name} part(s), columns key, status, error, {string.Join(", ", job.Engine.Columns)}, device, replica, attempts)");
        if (s.Interrupted || s.StoppedOnFailure)
        {
            console.WriteLine($"{(s.StoppedOnFailure ? "Stopped at the first failure (--fail-fast)" : $"Stopped by {stoppedBy}")}: the items finished so far are committed. Run the same command again to resume.");
        }
    }
}
