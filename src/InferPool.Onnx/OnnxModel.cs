using System.Security.Cryptography;
using InferPool.Onnx.Tensors;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Onnx;

/// <summary>
/// An ONNX model checked once before any replica loads it: its inputs and outputs, its SHA-256, and whether
/// it can take batches. Replicas build their sessions from it.
/// </summary>
/// <remarks>
/// Inputs and outputs may be any number of dense tensors of the types in <see cref="TensorData.SupportedTypes"/>,
/// with symbolic dimensions anywhere. A model whose batch dimension is fixed at 1 on every input (common in
/// exported models) is rewritten so the dimension is symbolic, then run on a few random items both ways; the
/// rewritten graph is used only if every output matches single-item runs within <see cref="ParityTolerance"/>.
/// Otherwise the model runs one item per call and <see cref="BatchingReport"/> says why.
/// </remarks>
public sealed partial class OnnxModel
{
    /// <summary>The largest difference allowed between batched and single-item outputs, relative to max(1, |value|).</summary>
    public const double ParityTolerance = 1e-5;

    private const int ParityItems = 3;

    /// <summary>The size given to symbolic dimensions other than the batch when the rewrite is checked.</summary>
    private const int ParityDimension = 4;

    private readonly Lazy<byte[]> _sessionBytes;

    private OnnxModel(string path, string sha256, Lazy<byte[]> sessionBytes, IReadOnlyList<TensorSpec> inputs, IReadOnlyList<TensorSpec> outputs, BatchingSupport batching, string report)
    {
        Path = path;
        Sha256 = sha256;
        _sessionBytes = sessionBytes;
        Inputs = inputs;
        Outputs = outputs;
        Batching = batching;
        BatchingReport = report;
    }

    /// <summary>The model file.</summary>
    public string Path { get; }

    /// <summary>The SHA-256 of the model file, lower-case hex: the model's identity for jobs and caches.</summary>
    public string Sha256 { get; }

    /// <summary>The model's inputs, in graph order; the first dimension of each is -1 when the model takes batches.</summary>
    public IReadOnlyList<TensorSpec> Inputs { get; }

    /// <summary>The model's only input.</summary>
    /// <exception cref="InvalidOperationException">The model has several inputs; use <see cref="Inputs"/>.</exception>
    public TensorSpec Input => Inputs.Count == 1
        ? Inputs[0]
        : throw new InvalidOperationException($"Model '{Path}' has {Inputs.Count} inputs ({string.Join(", ", Inputs.Select(i => i.Name))}); use Inputs.");

    /// <summary>
    /// True when the model has one float input with a fixed item shape and only float outputs: the shape that
    /// <see cref="OnnxReplicaFactory"/> (flat float arrays, pooled buffers) feeds. Every model runs through
    /// <see cref="OnnxTensorReplicaFactory"/>.
    /// </summary>
    public bool IsSingleFloatInput =>
        Inputs.Count == 1 && Inputs[0].ElementType == TensorElementType.Float && Inputs[0].ItemShapeIsFixed
        && Outputs.All(o => o.ElementType == TensorElementType.Float && o.Shape.Count > 0);

    /// <summary>The model's outputs, in graph order.</summary>
    public IReadOnlyList<TensorSpec> Outputs { get; }

    /// <summary>How the model takes batches.</summary>
    public BatchingSupport Batching { get; }

    /// <summary>A sentence on how batching was decided, for logs and summaries.</summary>
    public string BatchingReport { get; }

    /// <summary>The largest batch the model takes: 1 for <see cref="BatchingSupport.SingleItem"/>, else null (any).</summary>
    public int? MaxBatchSize => Batching == BatchingSupport.SingleItem ? 1 : null;

    /// <summary>
    /// The bytes sessions are built from (the rewritten graph when batching was rewritten). After a cached check they are
    /// read (and rewritten) when first asked for: a CPU session built from the cached optimized graph never asks, and reading
    /// and rewriting ResNet-18 cost about 240 ms of every run's start and 125 MB held to the end.
    /// </summary>
    /// <exception cref="InvalidDataException">The file changed since it was loaded.</exception>
    internal byte[] SessionBytes => _sessionBytes.Value;

    /// <summary>True when this load found its inputs, outputs and batching verdict in the check cache instead of checking the model again.</summary>
    public bool CheckWasCached { get; private init; }

    /// <summary>The cache folder this model was loaded with (where CPU sessions keep their optimized graph), or empty for none.</summary>
    internal string CacheDirectory { get; private init; } = "";

    /// <summary>Where loads keep what they learned about each model file unless told otherwise: <c>INFERPOOL_CACHE_DIR</c>, <c>$XDG_CACHE_HOME/inferpool</c> or <c>~/.cache/inferpool</c>, then <c>models/</c>.</summary>
    public static string DefaultCacheDirectory => ModelCheckCache.DefaultDirectory;

    /// <summary>Reads, inspects and (if needed) rewrites a model for batching.</summary>
    /// <param name="path">The .onnx file.</param>
    /// <param name="logger">Where the batching decision is logged.</param>
    /// <param name="cacheDirectory">
    /// Where what was learned about the file (inputs, outputs, batching verdict) is kept by its SHA-256 and the ONNX Runtime
    /// version, so that the next load skips the checking session and the rewrite's parity check; null for
    /// <see cref="DefaultCacheDirectory"/>, an empty string for no cache.
    /// </param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a model ONNX Runtime can load (including an operator it lacks).</exception>
    /// <exception cref="NotSupportedException">An input or output is not a dense tensor of a supported type, or an input is a scalar; the message names it.</exception>
    public static OnnxModel Load(string path, ILogger? logger = null, string? cacheDirectory = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        logger ??= NullLogger.Instance;
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The model file '{path}' does not exist.", path);
        }

        cacheDirectory ??= DefaultCacheDirectory;
        var file = new FileInfo(path); // its size and time as they are before the bytes are read
        var sha = cacheDirectory.Length > 0 ? ModelCheckCache.RememberedSha256(cacheDirectory, file) : null;
        byte[]? bytes = null;
        if (sha is null)
        {
            bytes = File.ReadAllBytes(path);
            sha = Convert.ToHexStringLower(SHA256.HashData(bytes));
            var after = new FileInfo(path);
            if (cacheDirectory.Length > 0 && after.Length == file.Length && after.LastWriteTimeUtc == file.LastWriteTimeUtc && file.Length == bytes.Length)
            {
                ModelCheckCache.RememberSha256(cacheDirectory, file, sha);
            }
        }

        if (cacheDirectory.Length > 0 && ModelCheckCache.TryRead(cacheDirectory, sha) is { } known)
        {
            // Checked before: the same file under the same ONNX Runtime. The session bytes are read when a session first
            // needs them; a rewrite is redone then (it is deterministic) but not re-checked.
            var rewrite = known.Batching == BatchingSupport.Rewritten;
            var checkedSha = sha;
            var fromFile = new Lazy<byte[]>(() =>
            {
                var read = ReadUnchanged(path, file, checkedSha);
                return rewrite ? BatchDimensionRewriter.MakeBatchSymbolic(read) : read;
            });
            LogBatching(logger, path, $"{known.Report} (checked before; from {cacheDirectory})");
            return new OnnxModel(path, sha, fromFile, [.. known.Inputs.Select(i => i.ToSpec())], [.. known.Outputs.Select(o => o.ToSpec())], known.Batching, known.Report)
            {
                CheckWasCached = true,
                CacheDirectory = cacheDirectory,
            };
        }

        bytes ??= ReadUnchanged(path, file, sha);
        using var original = CreateProbeSession(bytes, path);
        var inputs = Specs(original.InputMetadata, "input", path);
        var outputs = Specs(original.OutputMetadata, "output", path);
        if (inputs.FirstOrDefault(i => i.Shape.Count == 0) is { } scalar)
        {
            throw new NotSupportedException($"Model '{path}' input {scalar} is a scalar; the built-in ONNX replica needs inputs with a batch dimension.");
        }

        var (batching, sessionBytes, report) = DecideBatching(bytes, original, inputs, outputs);
        LogBatching(logger, path, report);
        if (batching == BatchingSupport.Rewritten)
        {
            inputs = [.. inputs.Select(i => i with { Shape = [-1, .. i.ItemShape] })];
            outputs = [.. outputs.Select(o => o.Shape.Count == 0 ? o : o with { Shape = [-1, .. o.ItemShape] })];
        }

        original.Dispose();
        ProcessMemory.ReturnFreedMemory();
        if (cacheDirectory.Length > 0)
        {
            ModelCheckCache.TryWrite(cacheDirectory, ModelCheckCache.Describe(sha, inputs, outputs, batching, report));
        }

        return new OnnxModel(path, sha, new Lazy<byte[]>(sessionBytes), inputs, outputs, batching, report) { CacheDirectory = cacheDirectory };
    }

    /// <summary>
    /// Checks that an item fits the model: a tensor per input, each of the input's element type and rank, agreeing with
    /// every fixed dimension, and (for a model that takes one item per call) one row.
    /// </summary>
    /// <param name="item">The item.</param>
    /// <exception cref="InvalidDataException">It does not fit; the message names the input and the reason.</exception>
    public void CheckItem(TensorItem item)
    {
        ArgumentNullException.ThrowIfNull(item);
        if (item.Inputs.Count != Inputs.Count)
        {
            throw new InvalidDataException($"The item has {item.Inputs.Count} input tensor(s); the model takes {Inputs.Count} ({string.Join(", ", Inputs.Select(i => i.Name))}).");
        }

        for (var i = 0; i < item.Inputs.Count; i++)
        {
            var spec = Inputs[i];
            var tensor = item.Inputs[i];
            var rowShape = item.RowShape(i);
            if (tensor.ElementType != spec.ElementType)
            {
                throw new InvalidDataException($"Input {spec.Name} is {tensor.ElementType}; the model takes {spec.ElementType}.");
            }

            if (rowShape.Length != spec.Shape.Count - 1)
            {
                throw new InvalidDataException($"Input {spec.Name} has shape {tensor.ShapeText}; model input {spec} takes rank {spec.Shape.Count} with the batch dimension or {spec.Shape.Count - 1} without.");
            }

            for (var d = 0; d < rowShape.Length; d++)
            {
                if (spec.Shape[d + 1] >= 0 && rowShape[d] != spec.Shape[d + 1])
                {
                    throw new InvalidDataException($"Input {spec.Name} has shape {tensor.ShapeText}; model input {spec} fixes dimension {d + 1} at {spec.Shape[d + 1]}.");
                }
            }
        }

        if (MaxBatchSize == 1 && item.Rows != 1)
        {
            throw new InvalidDataException($"The item has {item.Rows} rows; the model takes one per call.");
        }
    }

    /// <summary>Finds an output by name.</summary>
    /// <exception cref="ArgumentException">No output has that name; the message lists the outputs.</exception>
    public TensorSpec Output(string name) =>
        Outputs.FirstOrDefault(o => o.Name == name)
        ?? throw new ArgumentException($"Model '{Path}' has no output '{name}'; its outputs are {string.Join(", ", Outputs.Select(o => o.Name))}.", nameof(name));

    /// <summary>
    /// The file's bytes, when they are still those of SHA-256 <paramref name="sha256"/>: its size and time are those seen
    /// at load (the same test that lets a load trust a remembered hash), or else its bytes hash the same.
    /// </summary>
    private static byte[] ReadUnchanged(string path, FileInfo loaded, string sha256)
    {
        var bytes = File.ReadAllBytes(path);
        var now = new FileInfo(path);
        if ((now.Length != loaded.Length || now.LastWriteTimeUtc != loaded.LastWriteTimeUtc || bytes.Length != loaded.Length)
            && Convert.ToHexStringLower(SHA256.HashData(bytes)) != sha256)
        {
            throw new InvalidDataException($"The model file '{path}' changed after it was loaded (its SHA-256 is no longer {sha256}); load it again to use the new file.");
        }

        return bytes;
    }

    private static InferenceSession CreateProbeSession(byte[] bytes, string path)
    {
        // Basic optimisation, not none: without it shape inference leaves some output dimensions symbolic (MiniLM's 384).
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

    private static List<TensorSpec> Specs(IReadOnlyDictionary<string, NodeMetadata> metadata, string what, string path)
    {
        var specs = new List<TensorSpec>(metadata.Count);
        foreach (var (name, meta) in metadata)
        {
            if (!meta.IsTensor)
            {
                throw new NotSupportedException($"Model '{path}' {what} '{name}' is a {meta.OnnxValueType}, not a tensor; the built-in ONNX replica feeds and reads dense tensors only.");
            }

            if (!TensorData.SupportedTypes.Contains(meta.ElementDataType))
            {
                throw new NotSupportedException($"Model '{path}' {what} '{name}' has element type {meta.ElementDataType}; the built-in ONNX replica takes float, double, float16, int64, int32, int8, uint8 and bool tensors.");
            }

            specs.Add(new TensorSpec(name, meta.ElementDataType, [.. meta.Dimensions.Select(d => (long)d)])
            {
                DimensionNames = [.. meta.SymbolicDimensions.Select(n => n ?? "")],
            });
        }

        return specs;
    }

    private static (BatchingSupport Batching, byte[] Bytes, string Report) DecideBatching(
        byte[] bytes,
        InferenceSession original,
        IReadOnlyList<TensorSpec> inputs,
        IReadOnlyList<TensorSpec> outputs)
    {
        var names = string.Join(", ", inputs.Select(i => i.Name));
        if (inputs.All(i => i.Shape[0] < 0))
        {
            return (BatchingSupport.Native, bytes, $"batch dimension of {names} is symbolic: batches of any size");
        }

        if (inputs.FirstOrDefault(i => i.Shape[0] != 1) is { } other)
        {
            return (BatchingSupport.SingleItem, bytes, $"first dimension of {other.Name} is {(other.Shape[0] < 0 ? "symbolic" : other.Shape[0])} while another input's is fixed: one item per call");
        }

        if (outputs.Any(o => o.Shape.Count == 0 || o.Shape[0] > 1))
        {
            return (BatchingSupport.SingleItem, bytes, "an output has no batch dimension of 1: one item per call");
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

        var verdict = CheckParity(original, rewritten, inputs, outputs);
        return verdict.Error is null
            ? (BatchingSupport.Rewritten, rewritten, $"batch dimension was fixed at 1; rewritten to symbolic and checked: batch of {ParityItems} matches single items on every output (max difference {verdict.MaxDifference:G3})")
            : (BatchingSupport.SingleItem, bytes, $"batch dimension fixed at 1 and the rewritten graph {verdict.Error}: one item per call");
    }

    /// <summary>Runs <see cref="ParityItems"/> random items one by one on the original graph and as one batch on the rewritten one, and compares every output.</summary>
    private static (double MaxDifference, string? Error) CheckParity(InferenceSession original, byte[] rewritten, IReadOnlyList<TensorSpec> inputs, IReadOnlyList<TensorSpec> outputs)
    {
        var random = new Random(20261127);
        var items = new TensorData[ParityItems][];
        for (var i = 0; i < items.Length; i++)
        {
            items[i] = [.. inputs.Select(spec => RandomItem(spec, random))];
        }

        var outputNames = outputs.Select(o => o.Name).ToArray();
        float[][][] singles;
        try
        {
            singles = [.. items.Select(item => Run(original, inputs, [item], outputNames))];
        }
        catch (OnnxRuntimeException ex)
        {
            return (double.NaN, $"could not be checked: random inputs fail on the original graph ({FirstLine(ex.Message)})");
        }

        float[][] batched;
        try
        {
            using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1 };
            using var session = new InferenceSession(rewritten, options);
            batched = Run(session, inputs, items, outputNames);
        }
        catch (OnnxRuntimeException ex)
        {
            return (double.NaN, $"fails on a batch of {ParityItems} ({FirstLine(ex.Message)})");
        }

        double worst = 0;
        for (var o = 0; o < outputs.Count; o++)
        {
            var per = singles[0][o].Length;
            if (batched[o].Length != per * ParityItems || singles.Any(s => s[o].Length != per))
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

    /// <summary>One item for <paramref name="spec"/> (no batch dimension): floats in [-2, 2), integers 0 or 1 (valid ids and masks), booleans at random.</summary>
    private static TensorData RandomItem(TensorSpec spec, Random random)
    {
        long[] shape = [.. spec.ItemShape.Select(d => d > 0 ? d : ParityDimension)];
        var length = (int)shape.Aggregate(1L, (a, d) => a * d);
        var values = TensorData.NewArray(spec.ElementType, length);
        for (var i = 0; i < length; i++)
        {
            var r = random.NextDouble();
            switch (values)
            {
                case float[] f: f[i] = (float)((r * 4) - 2); break;
                case double[] d: d[i] = (r * 4) - 2; break;
                case Float16[] h: h[i] = (Float16)(float)((r * 4) - 2); break;
                case long[] l: l[i] = r < 0.5 ? 0 : 1; break;
                case int[] n: n[i] = r < 0.5 ? 0 : 1; break;
                case sbyte[] s when s.GetType() == typeof(sbyte[]): s[i] = (sbyte)(r < 0.5 ? 0 : 1); break;
                case byte[] b: b[i] = (byte)(r < 0.5 ? 0 : 1); break;
                case bool[] t: t[i] = r < 0.5; break;
            }
        }

        return new TensorData(spec.ElementType, shape, values);
    }

    /// <summary>Runs items stacked along a new first dimension; every output comes back as floats.</summary>
    private static float[][] Run(InferenceSession session, IReadOnlyList<TensorSpec> inputs, TensorData[][] items, string[] outputNames)
    {
        var values = new OrtValue[inputs.Count];
        try
        {
            for (var i = 0; i < inputs.Count; i++)
            {
                var per = items[0][i].Length;
                var data = TensorData.NewArray(inputs[i].ElementType, per * items.Length);
                for (var k = 0; k < items.Length; k++)
                {
                    Array.Copy(items[k][i].Values, 0, data, k * per, per);
                }

                values[i] = TensorData.ToOrtValue(data, [items.Length, .. items[0][i].Shape]);
            }

            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, [.. inputs.Select(i => i.Name)], values, outputNames);
            return [.. results.Select(r => TensorData.FromOrtValue(r).ToFloats())];
        }
        finally
        {
            foreach (var value in values)
            {
                value?.Dispose();
            }
        }
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
