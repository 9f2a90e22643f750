using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Onnx.Tensors;
using InferPool.Text;
using Microsoft.Extensions.Logging;

namespace InferPool.Cluster;

/// <summary>
/// What every node needs, beyond the model, to build a job's engine and read its input the way a local run of the
/// same command does: a text model's tokenizer and pooling, a table's key and input columns, padding values. Stored
/// with the job (<see cref="ClusterJob.Engine"/>) as JSON. The default (every property unset) is an image or
/// record model on a folder, list or JSONL file.
/// </summary>
public sealed record ClusterEngineOptions
{
    /// <summary>True for a text model (the built-in MiniLM or a BERT-family file): items are texts, tokenized on the node.</summary>
    public bool Text { get; init; }

    /// <summary>A text model's tokenizer file (vocab.txt or tokenizer.json) as every node sees it, or null for the model's own.</summary>
    public string? Tokenizer { get; init; }

    /// <summary>A text model's pooling: <c>mean</c>, <c>cls</c> or <c>none</c>; null for the model's default.</summary>
    public string? Pooling { get; init; }

    /// <summary>A text model's longest sequence in tokens, or null for the model's.</summary>
    public int? MaxTokens { get; init; }

    /// <summary>The most tokens (or padded elements) in one batch, or null for no limit beyond the batch size.</summary>
    public int? MaxBatchTokens { get; init; }

    /// <summary>The field or column that holds each text (text models).</summary>
    public string TextColumn { get; init; } = "text";

    /// <summary>A table's key column, or null for row numbers.</summary>
    public string? KeyColumn { get; init; }

    /// <summary>For a table and an ONNX model: the columns each model input reads, as the submitter mapped them against the table.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>>? InputColumns { get; init; }

    /// <summary>Padding values per model input, for inputs whose items differ in length.</summary>
    public IReadOnlyDictionary<string, double>? Pad { get; init; }

    /// <summary>True when nothing is set: an image or record model, as jobs were before these options were stored.</summary>
    [JsonIgnore]
    public bool IsDefault => this == new ClusterEngineOptions();

    /// <summary>The options as stored with the job.</summary>
    /// <returns>JSON.</returns>
    public string ToJson() => JsonSerializer.Serialize(this, ClusterJson.Default.ClusterEngineOptions);

    /// <summary>The options <see cref="ToJson"/> wrote; null or empty text gives the default.</summary>
    /// <param name="json">The stored text.</param>
    /// <returns>The options.</returns>
    /// <exception cref="FormatException">The text is not such options.</exception>
    public static ClusterEngineOptions Parse(string? json)
    {
        if (string.IsNullOrEmpty(json))
        {
            return new ClusterEngineOptions();
        }

        try
        {
            return JsonSerializer.Deserialize(json, ClusterJson.Default.ClusterEngineOptions) ?? new ClusterEngineOptions();
        }
        catch (JsonException ex)
        {
            throw new FormatException($"The job's stored engine options cannot be read: {json}", ex);
        }
    }

    /// <summary>
    /// The job's input as a local run opens it: texts for a text model (lines, JSONL fields, a table column), a table's
    /// rows, whole records for workers, else images or records.
    /// </summary>
    /// <param name="path">The input (a folder, list, JSONL, text or table file).</param>
    /// <param name="forWorker">True for a worker job.</param>
    /// <returns>The input source.</returns>
    public InputSource OpenInput(string path, bool forWorker)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!InputSource.IsTable(path))
        {
            return Text ? InputSource.OpenTexts(path, TextColumn) : InputSource.Open(path, forWorker);
        }

        return InputSource.OpenTable(path, Text ? new TableOptions { KeyColumn = KeyColumn, TextColumn = TextColumn } : new TableOptions { KeyColumn = KeyColumn });
    }

    /// <summary>The engine of an ONNX or text job with these options (worker jobs start their command instead).</summary>
    /// <param name="model">The model: a built-in name or a path.</param>
    /// <param name="logger">Where notes about the model go.</param>
    /// <returns>The engine.</returns>
    /// <exception cref="FileNotFoundException">The model or tokenizer is missing.</exception>
    /// <exception cref="NotSupportedException">The model's inputs cannot be fed.</exception>
    public JobEngine LoadEngine(string model, ILogger? logger = null)
    {
        if (Text)
        {
            var pooling = Pooling switch
            {
                null => (TextPooling?)null,
                "cls" => TextPooling.Cls,
                "none" => TextPooling.None,
                "mean" => TextPooling.Mean,
                var other => throw new NotSupportedException($"Pooling '{other}' is not supported: use mean, cls or none."),
            };
            return TextEngine.Load(model, Tokenizer, pooling, MaxTokens, MaxBatchTokens, logger);
        }

        var onnx = OnnxEngine.Load(model, logger);
        if (Pad is null && MaxBatchTokens is null && InputColumns is null)
        {
            return onnx;
        }

        return new OnnxEngine(onnx.Model, onnx.Onnx)
        {
            TensorBatching = Pad is null && MaxBatchTokens is null ? onnx.TensorBatching : new TensorBatching { PadValues = Pad ?? new Dictionary<string, double>(), MaxBatchTokens = MaxBatchTokens },
            InputColumns = InputColumns,
        };
    }

    /// <summary>What the engine depends on besides the model file: these options and the tokenizer file as it is now.</summary>
    internal string Identity()
    {
        var tokenizer = Tokenizer is null ? null : new FileInfo(Tokenizer);
        return string.Create(CultureInfo.InvariantCulture, $"{ToJson()}|{(tokenizer is { Exists: true } ? $"{tokenizer.Length}:{tokenizer.LastWriteTimeUtc.Ticks}" : "")}");
    }
}

/// <summary>The cluster's stored JSON, without reflection (the tool is trimmed).</summary>
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ClusterEngineOptions))]
internal sealed partial class ClusterJson : JsonSerializerContext;
