using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using InferPool.Cli.Output;

namespace InferPool.Cli;

/// <summary>
/// Source-generated JSON for what the CLI writes and reads itself, so the tool also works trimmed
/// (the self-contained build carried to GPU machines), where reflection-based serialization is off.
/// </summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(JobJournal))]
[JsonSerializable(typeof(InferPool.Cli.Tuning.TunedConfig))]
[JsonSerializable(typeof(InferPool.Cli.Commands.BenchReport))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(JsonNode))]
internal sealed partial class CliJson : JsonSerializerContext;
