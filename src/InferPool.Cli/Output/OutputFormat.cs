namespace InferPool.Cli.Output;

/// <summary>How a part file is encoded.</summary>
internal abstract class OutputFormat
{
    public abstract string Name { get; }

    public abstract string Extension { get; }

    /// <summary>Writes a whole part; <paramref name="columns"/> names each model output's column.</summary>
    public abstract Task WriteAsync(Stream stream, IReadOnlyList<ResultRow> rows, IReadOnlyList<OutputColumn> columns, CancellationToken cancellationToken);

    /// <exception cref="ArgumentException">The name is not parquet or jsonl; the message says so.</exception>
    public static OutputFormat Parse(string name) => name switch
    {
        "parquet" => new ParquetFormat(),
        "jsonl" => new JsonlFormat(),
        _ => throw new ArgumentException($"--format '{name}' is not supported: use parquet or jsonl."),
    };
}
