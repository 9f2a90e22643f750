using System.Globalization;

namespace InferPool.Cli.Output;

/// <summary>
/// Writes rows to numbered part files. A part is written to a temporary name, flushed to disk, renamed, and
/// the folder flushed: a part is all there or not there. At most <see cref="RowsPerPart"/> rows are held.
/// </summary>
internal sealed class PartWriter
{
    public const string PartPrefix = "part-";

    private readonly string _directory;
    private readonly OutputFormat _format;
    private readonly IReadOnlyList<string> _columns;
    private readonly List<ResultRow> _buffer;
    private readonly List<string> _parts = [];

    public PartWriter(string directory, OutputFormat format, IReadOnlyList<string> columns, int rowsPerPart)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rowsPerPart, 1);
        _directory = directory;
        _format = format;
        _columns = columns;
        RowsPerPart = rowsPerPart;
        _buffer = new List<ResultRow>(Math.Min(rowsPerPart, 4096));
    }

    public int RowsPerPart { get; }

    /// <summary>The parts committed so far, as full paths.</summary>
    public IReadOnlyList<string> Parts => _parts;

    /// <summary>Removes the parts (and leftover temporary parts) of an earlier run in the folder; nothing else is touched.</summary>
    public static int RemovePreviousParts(string directory, OutputFormat format)
    {
        if (!Directory.Exists(directory))
        {
            return 0;
        }

        var removed = 0;
        foreach (var file in Directory.EnumerateFiles(directory, PartPrefix + "*"))
        {
            var name = Path.GetFileName(file);
            if (name.EndsWith(format.Extension, StringComparison.Ordinal) || name.EndsWith(".tmp", StringComparison.Ordinal)
                || name.EndsWith(".parquet", StringComparison.Ordinal) || name.EndsWith(".jsonl", StringComparison.Ordinal))
            {
                File.Delete(file);
                removed++;
            }
        }

        return removed;
    }

    public async Task AddAsync(ResultRow row, CancellationToken cancellationToken)
    {
        _buffer.Add(row);
        if (_buffer.Count >= RowsPerPart)
        {
            await CommitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Commits whatever is buffered as a last part.</summary>
    public Task CompleteAsync(CancellationToken cancellationToken) =>
        _buffer.Count == 0 ? Task.CompletedTask : CommitAsync(cancellationToken);

    private async Task CommitAsync(CancellationToken cancellationToken)
    {
        var name = string.Create(CultureInfo.InvariantCulture, $"{PartPrefix}{_parts.Count:D5}{_format.Extension}");
        var final = Path.Combine(_directory, name);
        var temporary = final + ".tmp";
        var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
        await using (stream.ConfigureAwait(false))
        {
            await _format.WriteAsync(stream, _buffer, _columns, cancellationToken).ConfigureAwait(false);
            await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
            stream.Flush(flushToDisk: true);
        }

        File.Move(temporary, final, overwrite: true);
        Durable.FlushDirectory(_directory);
        _parts.Add(final);
        _buffer.Clear();
    }
}
