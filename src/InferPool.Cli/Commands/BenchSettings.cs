using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>The arguments of <c>inferpool bench</c>.</summary>
internal sealed class BenchSettings : CommandSettings
{
    [CommandArgument(0, "[INPUT]")]
    [Description("Inputs (folder, list file or .jsonl, as for run), cycled to --items. Default: the sample images.")]
    public string? Input { get; init; }

    [CommandOption("--model <MODEL>")]
    [Description("'resnet18' (built in) or a path to an .onnx file.")]
    [DefaultValue("resnet18")]
    public string Model { get; init; } = "resnet18";

    [CommandOption("--tokenizer <FILE>")]
    [Description("Makes --model a text model, with this vocab.txt or tokenizer.json (as for run).")]
    public string? Tokenizer { get; init; }

    /// <summary>True for a text model: minilm, or a tokenizer given.</summary>
    public bool IsText => Jobs.Engines.TextEngine.IsBuiltIn(Model) || Tokenizer is not null;

    [CommandOption("--items <N>")]
    [Description("Items each way processes per round (preparation included).")]
    [DefaultValue(200)]
    public int Items { get; init; } = 200;

    [CommandOption("--rounds <N>")]
    [Description("Rounds; the ways alternate within each, and the median is reported.")]
    [DefaultValue(3)]
    public int Rounds { get; init; } = 3;

    [CommandOption("--config <FILE>")]
    [Description("The tuned configuration for the InferPool way. Default: the one 'inferpool tune' saved beside the model, else run's defaults.")]
    public string? Config { get; init; }

    [CommandOption("--json")]
    [Description("Print the results as JSON.")]
    public bool Json { get; init; }

    [CommandOption("--chart <FILE>")]
    [Description("Also draw the throughput per way as a PNG chart.")]
    public string? Chart { get; init; }

    public override ValidationResult Validate() =>
        Items < 1 || Rounds < 1
            ? ValidationResult.Error("--items and --rounds must be at least 1.")
            : Chart is not null && !Chart.EndsWith(".png", StringComparison.OrdinalIgnoreCase)
                ? ValidationResult.Error($"--chart '{Chart}' must name a .png file.")
                : ValidationResult.Success();
}
