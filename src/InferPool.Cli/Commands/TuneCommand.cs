using System.Globalization;
using InferPool.Devices;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Tuning;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>
/// <c>inferpool tune</c>: measures replicas × threads × batch size on the user's own inputs within a time budget
/// and saves the fastest where <c>inferpool run</c> finds it.
/// </summary>
internal sealed class TuneCommand(IAnsiConsole console, ErrorOutput errors, TimeProvider time) : AsyncCommand<TuneSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, TuneSettings settings, CancellationToken cancellationToken)
    {
        var logger = new ConsoleLogger(errors.Writer, LogLevel.Warning);
        try
        {
            var inventory = NvmlDeviceInventory.Discover();
            var selection = DeviceSpec.Parse(settings.Devices).Resolve(inventory, d => d.IsGpu ? 2 : 1);
            var budget = settings.BudgetSpan;
            void Measured(TrialResult r) => console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {r.Candidate}: {r.ItemsPerSecond:F1} items/s{(r.Measurements > 1 ? $" (mean of {r.Measurements})" : "")}{(r.StoppedEarly ? ", stopped early: clearly slower" : "")}"));
            string name, sha, modelPath, what;
            IReadOnlyList<TrialResult> results;
            Tuner tuner;

            // What 'inferpool run' uses on these devices when nothing is tuned.
            Candidate Baseline(JobEngine engine) => Candidate.Defaults(inventory, engine, settings.Devices);

            if (settings.IsText)
            {
                // A text model: tokenized texts, windows of 256 and the default sorted by length into calls of the token budget.
                var text = TextEngine.Load(settings.Model, settings.Tokenizer, logger: logger);
                var input = InputSource.OpenTexts(settings.Input ?? ToolFiles.SampleTexts);
                var sample = (await Sample.LoadAsync(input, item => text.Text.Prepare(item.Text ?? throw new InvalidDataException(item.Error ?? "The item has no text.")), Math.Max(settings.SampleSize, TextEngine.DefaultBatch), cancellationToken).ConfigureAwait(false)).Prepared;
                var candidates = Candidate.For(selection, inventory.CpuCores, text.MaxBatchSize, batches: [256, TextEngine.DefaultBatch]);
                (name, sha, modelPath, what) = (text.Name, text.Fingerprint, text.Text.Model.Path, "tokenized texts");
                console.WriteLine($"Tuning {name} on {string.Join(", ", selection.Devices.Select(d => d.Device))} ({TunedConfig.MachineOf(inventory)}) with {sample.Count} text(s) of {input.Description}: {candidates.Count} configurations, at most {budget.TotalSeconds:F0}s.");
                tuner = new Tuner(text.Text.Model, time) { Baseline = Baseline(text) };
                results = await tuner.TuneAsync(candidates, sample, text.Batching, budget, Measured, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                var engine = RunCommand.LoadModel(settings.Model, logger);
                var (model, onnx) = (engine.Model, engine.Onnx);
                var input = InputSource.Open(settings.Input ?? ToolFiles.SampleImages);
                if (!engine.FeedsImages)
                {
                    // A model of any inputs: its records' tensors, read once.
                    var tensors = (await Sample.LoadAsync(input, new OnnxInputs(engine).PrepareTensors, settings.SampleSize, cancellationToken).ConfigureAwait(false)).Prepared;
                    var tensorCandidates = Candidate.For(selection, inventory.CpuCores, onnx.MaxBatchSize);
                    (name, sha, modelPath, what) = (model.Name, onnx.Sha256, model.Path, "records' tensors");
                    console.WriteLine($"Tuning {model.Name} on {string.Join(", ", selection.Devices.Select(d => d.Device))} ({TunedConfig.MachineOf(inventory)}) with {tensors.Count} item(s) of {input.Description}: {tensorCandidates.Count} configurations, at most {budget.TotalSeconds:F0}s.");
                    tuner = new Tuner(onnx, time) { Baseline = Baseline(engine) };
                    results = await tuner.TuneAsync(tensorCandidates, tensors, engine.TensorBatching, budget, Measured, cancellationToken).ConfigureAwait(false);
                    return await SaveAsync(results).ConfigureAwait(false);
                }

                var candidates = Candidate.For(selection, inventory.CpuCores, onnx.MaxBatchSize);
                var inputs = new OnnxInputs(engine);
                var sample = await Sample.LoadAsync(input, inputs, settings.SampleSize, cancellationToken).ConfigureAwait(false);
                (name, sha, modelPath, what) = (model.Name, onnx.Sha256, model.Path, "images decoded as a job decodes them, inference and preparation sharing the cores");
                console.WriteLine(
                    $"Tuning {model.Name} on {string.Join(", ", selection.Devices.Select(d => d.Device))} ({TunedConfig.MachineOf(inventory)}) with {sample.Tensors.Count} item(s) of {input.Description}" +
                    $"{(sample.Unusable > 0 ? $" ({sample.Unusable} unusable skipped)" : "")}: {candidates.Count} configurations, at most {budget.TotalSeconds:F0}s.");
                tuner = new Tuner(onnx, time) { Baseline = Baseline(engine) };
                results = await tuner.TuneAsync(candidates, sample.Items, inputs.Prepare, budget, Measured, cancellationToken).ConfigureAwait(false);
            }

            return await SaveAsync(results).ConfigureAwait(false);

            async Task<int> SaveAsync(IReadOnlyList<TrialResult> results)
            {
                var winner = tuner.Choose(results);
                var fastest = results[0];
                var table = new Table().AddColumns("", "devices", "threads", "batch", "prepare workers", "items/s", "vs best", "note");
                foreach (var r in results)
                {
                    var notes = new List<string>();
                    if (r.Candidate.Oversubscribed(inventory.CpuCores))
                    {
                        notes.Add("oversubscribed");
                    }

                    if (r.StoppedEarly)
                    {
                        notes.Add("stopped early");
                    }

                    table.AddRow(
                        r == winner ? "chosen" : r == fastest ? "fastest" : "",
                        Markup.Escape(r.Candidate.Plan.ToString()),
                        r.Candidate.Threads.ToString(CultureInfo.InvariantCulture),
                        r.Candidate.Batch.ToString(CultureInfo.InvariantCulture),
                        r.Candidate.PrepareWorkers?.ToString(CultureInfo.InvariantCulture) ?? "default",
                        r.ItemsPerSecond.ToString("F1", CultureInfo.InvariantCulture),
                        (r.ItemsPerSecond / winner.ItemsPerSecond).ToString("P0", CultureInfo.InvariantCulture),
                        string.Join(", ", notes));
                }

                console.Write(table);
                var config = new TunedConfig(
                    name,
                    sha,
                    TunedConfig.MachineOf(inventory),
                    winner.Candidate.Devices,
                    winner.Candidate.Threads,
                    winner.Candidate.Batch,
                    Math.Round(winner.ItemsPerSecond, 2),
                    time.GetUtcNow(),
                    [.. results.Select(r => new TunedTrial(r.Candidate.Devices, r.Candidate.Threads, r.Candidate.Batch, Math.Round(r.ItemsPerSecond, 2), r.Measurements, r.StoppedEarly, r.Candidate.Oversubscribed(inventory.CpuCores), r.Candidate.PrepareWorkers))])
                {
                    PrepareWorkers = winner.Candidate.PrepareWorkers,
                };
                var path = settings.Output ?? TunedConfig.BesideModel(modelPath);
                await config.SaveAsync(path, cancellationToken).ConfigureAwait(false);
                if (winner != fastest)
                {
                    console.WriteLine(string.Create(
                        CultureInfo.InvariantCulture,
                        $"Kept the defaults: the fastest, {fastest.Candidate}, measured {fastest.ItemsPerSecond / winner.ItemsPerSecond - 1:P1} faster than them, within the {tuner.Margin:P0} that short trials on this machine can differ by."));
                }

                console.WriteLine($"{(winner == fastest ? "Best" : "Chosen")}: {winner.Candidate} at {winner.ItemsPerSecond:F1} items/s (model inference on {what}). Saved to {Path.GetFullPath(path)}.");
                console.WriteLine(settings.Output is null
                    ? "'inferpool run' with this model uses it from there unless the command line says otherwise."
                    : $"Use it with 'inferpool run --config {path}', or name it {TunedConfig.FileName} in the output folder.");
                return ExitCodes.Ok;
            }
        }
        catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException or NotSupportedException or InvalidOperationException or IOException or UnauthorizedAccessException or OnnxRuntimeException)
        {
            return errors.Fail(ex.Message);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            errors.Writer.WriteLine("inferpool: tuning stopped; nothing was saved.");
            return ExitCodes.Interrupted;
        }
    }
}
