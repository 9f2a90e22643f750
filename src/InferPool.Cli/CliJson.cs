using System.Text.Json.Serialization;

namespace InferPool.Cli;

/// <summary>
/// Source-generated JSON for what the CLI writes itself, so the tool also works trimmed (the self-contained build
/// carried to GPU machines), where reflection-based serialization is off.
/// </summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(InferPool.Cli.Commands.BenchReport))]
internal sealed partial class CliJson : JsonSerializerContext;
