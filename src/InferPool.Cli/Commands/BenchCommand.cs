using System.Globalization;
using System.Text.Json;
using InferPool.Cli.Output;
using InferPool.Devices;
using InferPool.Jobs.Benchmarking;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Tuning;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>
/// <c>inferpool bench</c>: <see cref="ThreeWayBenchmark"/> on the user's inputs, with the tuned (or default)
/// configuration for the InferPool way; prints a table, JSON, or a chart.
/// </summary>
internal sealed class BenchCommand(IAnsiConsole console, ErrorOutput errors) : AsyncCommand<BenchSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, BenchSettings settings, CancellationToken cancellationToken)
    {
        var logger = new ConsoleLogger(errors.Writer, LogLevel.Warning);
        try
        {
            var inventory = NvmlDeviceInventory.Discover();
            var machine = TunedConfig.MachineOf(inventory);
            JobEngine engine;
            IReadOnlyList<InputItem> items;
            InputSource input;
            Candidate pooled;
            TunedConfig? tuned;
            if (settings.IsText)
            {
                var text = TextEngine.Load(settings.Model, settings.Tokenizer, logger: logger);
                input = InputSource.OpenTexts(settings.Input ?? ToolFiles.SampleTexts);
                items = await ThreeWayBenchmark.CycledTextsAsync(input, settings.Items, cancellationToken).ConfigureAwait(false);
                tuned = RunCommand.FindTuned(settings.Config, null, text, inventory, logger);
                pooled = tuned is null ? Candidate.Defaults(inventory, text) : Candidate.From(tuned, inventory);
                engine = text;
            }
            else
            {
                var onnx = RunCommand.LoadModel(settings.Model, logger);
                input = InputSource.Open(settings.Input ?? ToolFiles.SampleImages);
                items = onnx.FeedsImages
                    ? await ThreeWayBenchmark.CycledItemsAsync(input, new OnnxInputs(onnx), settings.Items, cancellationToken).ConfigureAwait(false)
                    : await ThreeWayBenchmark.CycledRecordsAsync(input, new OnnxInputs(onnx), settings.Items, cancellationToken).ConfigureAwait(false);
                tuned = RunCommand.FindTuned(settings.Config, null, onnx, inventory, logger);
                pooled = tuned is null ? Candidate.Defaults(inventory, onnx) : Candidate.From(tuned, inventory);
                engine = onnx;
            }

            var note = tuned is null ? " (run's defaults; 'inferpool tune' may find better)" : " (tuned)";
            if (!settings.Json)
            {
                console.WriteLine($"{items.Count} items of {input.Description} with {engine.Name}, {settings.Rounds} round(s), ways alternating; {machine}.");
            }

            var ways = engine is TextEngine textEngine
                ? await ThreeWayBenchmark.RunAsync(textEngine, items, pooled, note, inventory.CpuCores, settings.Rounds, cancellationToken).ConfigureAwait(false)
                : await ThreeWayBenchmark.RunAsync((OnnxEngine)engine, items, pooled, note, inventory.CpuCores, settings.Rounds, cancellationToken).ConfigureAwait(false);
            var baseline = ways[0].ItemsPerSecond;
            if (settings.Json)
            {
                var report = new BenchReport(
                    engine.Name,
                    machine,
                    items.Count,
                    settings.Rounds,
                    [.. ways.Select(w => new BenchWay(w.Name, w.Configuration, Math.Round(w.ItemsPerSecond, 2), Math.Round(w.ItemsPerSecond / baseline, 3), [.. w.Seconds.Select(s => Math.Round(s, 3))]))]);
                console.Profile.Out.Writer.WriteLine(JsonSerializer.Serialize(report, CliJson.Default.BenchReport));
            }
            else
            {
                var table = new Table().AddColumns("way", "configuration", $"items/s (median of {settings.Rounds})", "× plain loop");
                foreach (var way in ways)
                {
                    table.AddRow(Markup.Escape(way.Name), Markup.Escape(way.Configuration), way.ItemsPerSecond.ToString("F1", CultureInfo.InvariantCulture), (way.ItemsPerSecond / baseline).ToString("F2", CultureInfo.InvariantCulture));
                }

                console.Write(table);
            }

            if (settings.Chart is { } chart)
            {
                if (ThroughputChart.Save(chart, $"{engine.Name}: {items.Count} items, {machine}", [.. ways.Select(w => (w.Name, w.ItemsPerSecond))]) is { } warning)
                {
                    logger.LogWarning("Chart: {Warning}.", warning);
                }

                if (!settings.Json)
                {
                    console.WriteLine($"Chart: {Path.GetFullPath(chart)}");
                }
            }

            return ExitCodes.Ok;
        }
        catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException or NotSupportedException or InvalidOperationException or IOException or UnauthorizedAccessException or OnnxRuntimeException)
        {
            return errors.Fail(ex.Message);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            errors.Writer.WriteLine("inferpool: bench stopped.");
            return ExitCodes.Interrupted;
        }
    }
}

/// <summary>bench --json.</summary>
internal sealed record BenchReport(string Model, string Machine, int Items, int Rounds, IReadOnlyList<BenchWay> Ways);

/// <summary>One way's figures: items per second (median), ratio to the plain loop, and each round's seconds.</summary>
internal sealed record BenchWay(string Name, string Configuration, double ItemsPerSecond, double RatioToPlainLoop, IReadOnlyList<double> Seconds);
