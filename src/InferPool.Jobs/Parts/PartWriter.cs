using System.Globalization;

namespace InferPool.Jobs.Parts;

/// <summary>
/// A sink that writes rows to numbered part files in an output folder. A part is written durably
/// (<see cref="Durable"/>) and then recorded in the job journal: a part is all there or not there, and counts
/// only once the journal lists it. At most <see cref="RowsPerPart"/> rows are held.
/// </summary>
public sealed class PartWriter : IResultSink
{
    /// <summary>How every part file's name starts.</summary>
    public const string PartPrefix = "part-";

    private readonly string _directory;
    private readonly OutputFormat _format;
    private readonly IReadOnlyList<OutputColumn> _columns;
    private readonly List<ResultRow> _buffer;
    private readonly List<string> _parts = [];
    private readonly JobJournal _journal;

    /// <summary>Writes parts into <paramref name="directory"/>, numbered after those <paramref name="journal"/> lists, and records each in it once committed.</summary>
    /// <param name="directory">The output folder.</param>
    /// <param name="journal">The folder's journal (from <see cref="OutputFolder.OpenAsync"/>).</param>
    /// <param name="format">How parts are encoded.</param>
    /// <param name="columns">The model output columns.</param>
    /// <param name="rowsPerPart">Rows per part.</param>
    public PartWriter(string directory, JobJournal journal, OutputFormat format, IReadOnlyList<OutputColumn> columns, int rowsPerPart)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rowsPerPart, 1);
        _directory = directory;
        _journal = journal;
        _format = format;
        _columns = columns;
        RowsPerPart = rowsPerPart;
        _buffer = new List<ResultRow>(Math.Min(rowsPerPart, 4096));
    }

    /// <summary>Rows per part.</summary>
    public int RowsPerPart { get; }

    /// <summary>The parts this writer committed, as full paths.</summary>
    public IReadOnlyList<string> Parts => _parts;

    /// <inheritdoc/>
    public async ValueTask AddAsync(ResultRow row, CancellationToken cancellationToken = default)
    {
        _buffer.Add(row);
        if (_buffer.Count >= RowsPerPart)
        {
            await CommitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc/>
    public ValueTask CompleteAsync(CancellationToken cancellationToken = default) =>
        _buffer.Count == 0 ? ValueTask.CompletedTask : new ValueTask(CommitAsync(cancellationToken));

    private async Task CommitAsync(CancellationToken cancellationToken)
    {
        var name = string.Create(CultureInfo.InvariantCulture, $"{PartPrefix}{_journal.Parts.Count:D5}{_format.Extension}");
        var final = Path.Combine(_directory, name);
        await Durable.WriteAtomicallyAsync(final, (stream, token) => _format.WriteAsync(stream, _buffer, _columns, token), cancellationToken).ConfigureAwait(false);

        // Only now is the part committed: a crash before the journal is saved leaves a part the journal does not
        // list, which the next run discards and redoes; after it, the next run skips its keys.
        _journal.Parts.Add(new CommittedPart(name, _buffer.Count));
        await _journal.SaveAsync(_directory, cancellationToken).ConfigureAwait(false);
        _parts.Add(final);
        _buffer.Clear();
        LargeObjectWatch.AfterPart();
    }
}
