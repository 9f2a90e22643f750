using System.ComponentModel;
using System.Globalization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>The arguments of <c>inferpool tune</c>.</summary>
internal sealed class TuneSettings : CommandSettings
{
    [CommandArgument(0, "[INPUT]")]
    [Description("Inputs to measure with (folder, list file or .jsonl, as for run; texts for a text model); the first --sample items are used. Default: the sample images (or sample texts).")]
    public string? Input { get; init; }

    [CommandOption("--model <MODEL>")]
    [Description("'resnet18', 'minilm' (built in) or a path to an .onnx file.")]
    [DefaultValue("resnet18")]
    public string Model { get; init; } = "resnet18";

    [CommandOption("--tokenizer <FILE>")]
    [Description("Makes --model a text model, with this vocab.txt or tokenizer.json (as for run).")]
    public string? Tokenizer { get; init; }

    /// <summary>True for a text model: minilm, or a tokenizer given.</summary>
    public bool IsText => Jobs.Engines.TextEngine.IsBuiltIn(Model) || Tokenizer is not null;

    [CommandOption("--devices <DEVICES>")]
    [Description("The devices to tune for: auto, cpu, cuda, cuda:0,1.")]
    [DefaultValue("auto")]
    public string Devices { get; init; } = "auto";

    [CommandOption("--budget <TIME>")]
    [Description("How long the search may take, replica builds included: 60s, 2m, 90.")]
    [DefaultValue("60s")]
    public string Budget { get; init; } = "60s";

    [CommandOption("--sample <N>")]
    [Description("Items of the input to measure with (prepared once, then cycled).")]
    [DefaultValue(32)]
    public int SampleSize { get; init; } = 32;

    [CommandOption("-o|--output <FILE>")]
    [Description("Where to save the winner. Default: beside the model (e.g. models/resnet18/ResNet18.tuned.json), where run finds it.")]
    public string? Output { get; init; }

    /// <summary>The budget as a time span.</summary>
    public TimeSpan BudgetSpan => ParseDuration(Budget) ?? TimeSpan.FromSeconds(60);

    public override ValidationResult Validate()
    {
        if (ParseDuration(Budget) is not { } budget || budget < TimeSpan.FromSeconds(1))
        {
            return ValidationResult.Error($"--budget '{Budget}' is not a duration of at least 1 second (e.g. 60s, 2m, 90).");
        }

        if (SampleSize < 1)
        {
            return ValidationResult.Error($"--sample is {SampleSize}; it must be at least 1.");
        }

        return DevicesOption.Validate(Devices);
    }

    /// <summary>"90", "90s", "1.5m", "2h"; null when it is none of these.</summary>
    internal static TimeSpan? ParseDuration(string text)
    {
        var trimmed = text.Trim();
        var (number, unit) = trimmed.Length > 0 && char.IsLetter(trimmed[^1]) ? (trimmed[..^1], trimmed[^1]) : (trimmed, 's');
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value < 0)
        {
            return null;
        }

        return unit switch
        {
            's' => TimeSpan.FromSeconds(value),
            'm' => TimeSpan.FromMinutes(value),
            'h' => TimeSpan.FromHours(value),
            _ => null,
        };
    }
}
