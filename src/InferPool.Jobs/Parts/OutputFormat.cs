using InferPool.Onnx.Tensors;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Jobs.Parts;

/// <summary>How a part file is encoded: it writes whole parts and reads back the keys a part holds (for resuming).</summary>
public abstract class OutputFormat
{
    /// <summary>Apache Parquet parts (<c>.parquet</c>), one column per field.</summary>
    public static OutputFormat Parquet { get; } = new ParquetFormat();

    /// <summary>JSON Lines parts (<c>.jsonl</c>), one object per row.</summary>
    public static OutputFormat Jsonl { get; } = new JsonlFormat();

    /// <summary>The format's name: <c>parquet</c> or <c>jsonl</c>.</summary>
    public abstract string Name { get; }

    /// <summary>The part files' extension, with its dot.</summary>
    public abstract string Extension { get; }

    /// <summary>Writes a whole part.</summary>
    /// <param name="stream">Where the part goes.</param>
    /// <param name="rows">The part's rows.</param>
    /// <param name="columns">The model output columns, in order; each row's <see cref="ResultRow.Outputs"/> follows them.</param>
    /// <param name="cancellationToken">Stops the write.</param>
    public abstract Task WriteAsync(Stream stream, IReadOnlyList<ResultRow> rows, IReadOnlyList<OutputColumn> columns, CancellationToken cancellationToken = default);

    /// <summary>
    /// Writes a throwaway part of two rows (one ok, one failed) in memory, so that the format's code is compiled
    /// before the first real part: a job calls it in the background while its replicas build, instead of paying
    /// for it at its end (Parquet's first part took about 130 ms more than its later ones). A warm-up that fails, or is
    /// cancelled, ends quietly: the real parts report their own errors.
    /// </summary>
    /// <param name="columns">The job's output columns.</param>
    /// <param name="cancellationToken">Stops the write.</param>
    public async Task WarmUpAsync(IReadOnlyList<OutputColumn> columns, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(columns);
        try
        {
            var failed = new ResultRow { Key = "warm-up#2", Ok = false, Error = "warm-up", ErrorType = "WarmUp", Attempts = 1 };
            var floats = columns.All(c => c.IsJson || c.ElementType == TensorElementType.Float);
            var ok = new ResultRow
            {
                Key = "warm-up",
                Ok = true,
                Outputs = columns.Any(c => c.IsJson) ? null : [.. columns.Select(_ => TensorData.Create(new float[1], 1))],
                Json = columns.Any(c => c.IsJson) ? "[0]" : null,
                Device = "cpu",
                Replica = "cpu#0",
                Attempts = 1,
            };
            using var sink = new MemoryStream();
            await WriteAsync(sink, floats ? [ok, failed] : [failed], columns, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || cancellationToken.IsCancellationRequested)
        {
            // Only a warm-up (or the job was cancelled): the real parts report their own errors.
        }
    }

    /// <summary>The key and status of each row of a part file, in order.</summary>
    /// <param name="path">The part file.</param>
    /// <param name="cancellationToken">Stops the reading.</param>
    /// <exception cref="InvalidDataException">The file is not a part of this format.</exception>
    public abstract IAsyncEnumerable<(string Key, bool Ok)> ReadKeysAsync(string path, CancellationToken cancellationToken = default);

    /// <summary>The format named <paramref name="name"/>.</summary>
    /// <param name="name"><c>parquet</c> or <c>jsonl</c>.</param>
    /// <exception cref="ArgumentException">The name is neither; the message says what is allowed.</exception>
    public static OutputFormat Parse(string name) => name switch
    {
        "parquet" => Parquet,
        "jsonl" => Jsonl,
        _ => throw new ArgumentException($"The output format '{name}' is not supported: use parquet or jsonl.", nameof(name)),
    };

    /// <summary>The format whose extension <paramref name="path"/> has, or null.</summary>
    /// <param name="path">A part file's path.</param>
    public static OutputFormat? ForFile(string path) =>
        path.EndsWith(Parquet.Extension, StringComparison.Ordinal) ? Parquet
        : path.EndsWith(Jsonl.Extension, StringComparison.Ordinal) ? Jsonl
        : null;
}
