using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Onnx;

/// <summary>
/// An ONNX model checked once before any replica loads it: its input and outputs, its SHA-256, and whether
/// it can take batches. Replicas build their sessions from it.
/// </summary>
/// <remarks>
/// A model whose batch dimension is fixed at 1 (common in exported image models) is rewritten so the
/// dimension is symbolic, then run on a few random items both ways; the rewritten graph is used only if
/// every output matches single-item runs within <see cref="ParityTolerance"/>. Otherwise the model runs one
/// item per call and <see cref="BatchingReport"/> says why.
/// </remarks>
public sealed partial class OnnxModel
{
    /// <summary>The largest difference allowed between batched and single-item outputs, relative to max(1, |value|).</summary>
    public const double ParityTolerance = 1e-5;

    private const int ParityItems = 3;

    private OnnxModel(string path, string sha256, byte[] sessionBytes, TensorSpec input, IReadOnlyList<TensorSpec> outputs, BatchingSupport batching, string report)
    {
        Path = path;
        Sha256 = sha256;
        SessionBytes = sessionBytes;
        Input = input;
        Outputs = outputs;
        Batching = batching;
        BatchingReport = report;
    }

    /// <summary>The model file.</summary>
    public string Path { get; }

    /// <summary>The SHA-256 of the model file, lower-case hex: the model's identity for jobs and caches.</summary>
    public string Sha256 { get; }

    /// <summary>The model's single input; its first dimension is -1 when the model takes batches.</summary>
    public TensorSpec Input { get; }

    /// <summary>The model's outputs, in graph order.</summary>
    public IReadOnlyList<TensorSpec> Outputs { get; }

    /// <summary>How the model takes batches.</summary>
    public BatchingSupport Batching { get; }

    /// <summary>A sentence on how batching was decided, for logs and summaries.</summary>
    public string BatchingReport { get; }

    /// <summary>The largest batch the model takes: 1 for <see cref="BatchingSupport.SingleItem"/>, else null (any).</summary>
    public int? MaxBatchSize => Batching == BatchingSupport.SingleItem ? 1 : null;

    /// <summary>The bytes sessions are built from (the rewritten graph when batching was rewritten).</summary>
    internal byte[] SessionBytes { get; }

    /// <summary>Reads, inspects and (if needed) rewrites a model for batching.</summary>
    /// <param name="path">The .onnx file.</param>
    /// <param name="logger">Where the batching decision is logged.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a model ONNX Runtime can load.</exception>
    /// <exception cref="NotSupportedException">The model has more than one input, or non-float tensors.</exception>
    public static OnnxModel Load(string path, ILogger? logger = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        logger ??= NullLogger.Instance;
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The model file '{path}' does not exist.", path);
        }

        var bytes = File.ReadAllBytes(path);
        var sha = Convert.ToHexStringLower(SHA256.HashData(bytes));
        using var original = CreateProbeSession(bytes, path);
        var input = SingleFloatInput(original, path);
        var outputs = FloatOutputs(original, path);

        var (batching, sessionBytes, report) = DecideBatching(bytes, original, input, outputs);
        LogBatching(logger, path, report);
        if (batching != BatchingSupport.SingleItem)
        {
            input = input with { Shape = [-1, .. input.ItemShape] };
            outputs = [.. outputs.Select(o => o with { Shape = [-1, .. o.ItemShape] })];
        }

        original.Dispose();
        ProcessMemory.ReturnFreedMemory();
        return new OnnxModel(path, sha, sessionBytes, input, outputs, batching, report);
    }

    /// <summary>Finds an output by name.</summary>
    /// <exception cref="ArgumentException">No output has that name; the message lists the outputs.</exception>
    public TensorSpec Output(string name) =>
        Outputs.FirstOrDefault(o => o.Name == name)
        ?? throw new ArgumentException($"Model '{Path}' has no output '{name}'; its outputs are {string.Join(", ", Outputs.Select(o => o.Name))}.", nameof(name));

    private static InferenceSession CreateProbeSession(byte[] bytes, string path)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC };
        try
        {
            return new InferenceSession(bytes, options);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new InvalidDataException($"'{path}' is not a model ONNX Runtime can load: {FirstLine(ex.Message)}", ex);
        }
    }

    private static TensorSpec SingleFloatInput(InferenceSession session, string path)
    {
        if (session.InputMetadata.Count != 1)
        {
            throw new NotSupportedException(
                $"Model '{path}' has {session.InputMetadata.Count} inputs ({string.Join(", ", session.InputMetadata.Keys)}); the built-in ONNX replica runs models with one input. Wrap the model in a delegate replica for more.");
        }

        var (name, meta) = session.InputMetadata.First();
        var spec = Spec(name, meta);
        if (spec.ElementType != TensorElementType.Float)
        {
            throw new NotSupportedException($"Model '{path}' input {spec} has element type {spec.ElementType}; the built-in ONNX replica feeds float tensors.");
        }

        if (spec.Shape.Count == 0)
        {
            throw new NotSupportedException($"Model '{path}' input {spec} is a scalar; the built-in ONNX replica needs a tensor with a batch dimension.");
        }

        return spec;
    }

    private static List<TensorSpec> FloatOutputs(InferenceSession session, string path)
    {
        var outputs = session.OutputMetadata.Select(kv => Spec(kv.Key, kv.Value)).ToList();
        var bad = outputs.FirstOrDefault(o => o.ElementType != TensorElementType.Float || o.Shape.Count == 0);
        return bad is null
            ? outputs
            : throw new NotSupportedException($"Model '{path}' output {bad} is not a float tensor with a batch dimension; the built-in ONNX replica reads float tensors.");
    }

    private static TensorSpec Spec(string name, NodeMetadata meta) =>
        new(name, meta.ElementDataType, [.. meta.Dimensions.Select(d => (long)d)]);

    private static (BatchingSupport Batching, byte[] Bytes, string Report) DecideBatching(
        byte[] bytes,
        InferenceSession original,
        TensorSpec input,
        IReadOnlyList<TensorSpec> outputs)
    {
        if (input.Shape[0] < 0)
        {
            return (BatchingSupport.Native, bytes, $"batch dimension of {input.Name} is symbolic: batches of any size");
        }

        if (input.Shape[0] != 1 || outputs.Any(o => o.Shape[0] > 1))
        {
            return (BatchingSupport.SingleItem, bytes, $"first dimension of {input.Name} is {input.Shape[0]}, not a batch dimension of 1: one item per call");
        }

        if (!input.ItemShapeIsFixed || outputs.Any(o => !o.ItemShapeIsFixed))
        {
            return (BatchingSupport.SingleItem, bytes, "item shapes are not fixed, so a rewritten batch dimension cannot be checked: one item per call");
        }

        byte[] rewritten;
        try
        {
            rewritten = BatchDimensionRewriter.MakeBatchSymbolic(bytes);
        }
        catch (InvalidDataException ex)
        {
            return (BatchingSupport.SingleItem, bytes, $"batch dimension fixed at 1 and the graph could not be rewritten ({ex.Message}): one item per call");
        }

        var verdict = CheckParity(original, rewritten, input, outputs);
        return verdict.Error is null
            ? (BatchingSupport.Rewritten, rewritten, $"batch dimension was fixed at 1; rewritten to symbolic and checked: batch of {ParityItems} matches single items (max difference {verdict.MaxDifference:G3})")
            : (BatchingSupport.SingleItem, bytes, $"batch dimension fixed at 1 and the rewritten graph {verdict.Error}: one item per call");
    }

    private static (double MaxDifference, string? Error) CheckParity(InferenceSession original, byte[] rewritten, TensorSpec input, IReadOnlyList<TensorSpec> outputs)
    {
        var random = new Random(20261127);
        var items = new float[ParityItems][];
        for (var i = 0; i < items.Length; i++)
        {
            items[i] = new float[input.ItemLength];
            for (var j = 0; j < items[i].Length; j++)
            {
                items[i][j] = (float)((random.NextDouble() * 4) - 2);
            }
        }

        var outputNames = outputs.Select(o => o.Name).ToArray();
        var singles = items.Select(item => Run(original, input, [item], outputNames)).ToArray();
        float[][] batched;
        try
        {
            using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1 };
            using var session = new InferenceSession(rewritten, options);
            batched = Run(session, input, items, outputNames);
        }
        catch (OnnxRuntimeException ex)
        {
            return (double.NaN, $"fails on a batch of {ParityItems} ({FirstLine(ex.Message)})");
        }

        double worst = 0;
        for (var o = 0; o < outputs.Count; o++)
        {
            var per = outputs[o].ItemLength;
            if (batched[o].Length != per * ParityItems)
            {
                return (double.NaN, $"returns {batched[o].Length} values for {outputs[o].Name} on a batch of {ParityItems}, expected {per * ParityItems}");
            }

            for (var i = 0; i < ParityItems; i++)
            {
                var single = singles[i][o];
                for (var k = 0; k < per; k++)
                {
                    var a = single[k];
                    var b = batched[o][(i * per) + k];
                    var difference = Math.Abs(a - b) / Math.Max(1.0, Math.Abs(a));
                    worst = Math.Max(worst, double.IsNaN(difference) ? double.PositiveInfinity : difference);
                }
            }
        }

        return worst <= ParityTolerance ? (worst, null) : (worst, $"gives different numbers on a batch (max difference {worst:G3} > {ParityTolerance:G1})");
    }

    private static float[][] Run(InferenceSession session, TensorSpec input, float[][] items, string[] outputNames)
    {
        var data = new float[items.Length * input.ItemLength];
        for (var i = 0; i < items.Length; i++)
        {
            items[i].CopyTo(data, i * input.ItemLength);
        }

        using var value = OrtValue.CreateTensorValueFromMemory(data, [items.Length, .. input.ItemShape]);
        using var runOptions = new RunOptions();
        using var results = session.Run(runOptions, [input.Name], [value], outputNames);
        return [.. results.Select(r => r.GetTensorDataAsSpan<float>().ToArray())];
    }

    private static string FirstLine(string message)
    {
        var line = message.AsSpan().Trim();
        var end = line.IndexOfAny('\r', '\n');
        return (end < 0 ? line : line[..end]).ToString();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Model {Path}: {Report}")]
    private static partial void LogBatching(ILogger logger, string path, string report);
}
