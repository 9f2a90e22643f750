using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using InferPool.Jobs.Parts;
using InferPool.Jobs.Tuning;

namespace InferPool.Jobs;

/// <summary>
/// Source-generated JSON for the files jobs write and read (journal, tuned configs, worker records), so a
/// trimmed self-contained program using this library works too, where reflection-based serialization is off.
/// </summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(JobJournal))]
[JsonSerializable(typeof(TunedConfig))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(JsonNode))]
internal sealed partial class JobsJson : JsonSerializerContext;
