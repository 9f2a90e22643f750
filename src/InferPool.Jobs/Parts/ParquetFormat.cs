using System.Buffers;
using System.Runtime.CompilerServices;
using Parquet;
using Parquet.Schema;

namespace InferPool.Jobs.Parts;

/// <summary>
/// Parquet parts: <c>key</c>, <c>status</c>, <c>error</c>, one list&lt;float&gt; column per model output (or a
/// string column of JSON text for a worker's output kept as JSON), <c>device</c>, <c>replica</c>, <c>attempts</c>.
/// A failed row has an empty list (or null JSON) for each output. Written column by column straight from the
/// rows: no per-row objects, and the only large buffer is one output column's values at a time.
/// </summary>
internal sealed class ParquetFormat : OutputFormat
{
    public override string Name => "parquet";

    public override string Extension => ".parquet";

    public static ParquetSchema Schema(IReadOnlyList<OutputColumn> columns) => new(
    [
        new DataField<string>("key"),
        new DataField<string>("status"),
        new DataField<string>("error", true),
        .. columns.Select(c => c.IsJson ? (Field)new DataField<string>(c.Name, true) : new ListField(c.Name, new DataField<float>("element"))),
        new DataField<string>("device", true),
        new DataField<string>("replica", true),
        new DataField<int>("attempts"),
    ]);

    public override async Task WriteAsync(Stream stream, IReadOnlyList<ResultRow> rows, IReadOnlyList<OutputColumn> columns, CancellationToken cancellationToken = default)
    {
        var schema = Schema(columns);
        var fields = schema.GetDataFields();
        var writer = await ParquetWriter.CreateAsync(schema, stream, cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (writer.ConfigureAwait(false))
        {
            await WriteGroupAsync(writer, fields, rows, columns, cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task WriteGroupAsync(ParquetWriter writer, DataField[] fields, IReadOnlyList<ResultRow> rows, IReadOnlyList<OutputColumn> columns, CancellationToken cancellationToken)
    {
        using var group = writer.CreateRowGroup();
        var f = 0;
        await group.WriteAsync(fields[f++], Strings(rows, r => r.Key)).ConfigureAwait(false);
        await group.WriteAsync(fields[f++], Strings(rows, r => r.Status)).ConfigureAwait(false);
        await group.WriteAsync(fields[f++], Strings(rows, r => r.Error)).ConfigureAwait(false);
        for (var c = 0; c < columns.Count; c++)
        {
            var field = fields[f++];
            if (columns[c].IsJson)
            {
                await group.WriteAsync(field, Strings(rows, r => r.Json)).ConfigureAwait(false);
            }
            else
            {
                await WriteListAsync(group, field, rows, c, cancellationToken).ConfigureAwait(false);
            }
        }

        await group.WriteAsync(fields[f++], Strings(rows, r => r.Device)).ConfigureAwait(false);
        await group.WriteAsync(fields[f++], Strings(rows, r => r.Replica)).ConfigureAwait(false);
        var attempts = new int[rows.Count];
        for (var i = 0; i < rows.Count; i++)
        {
            attempts[i] = rows[i].Attempts;
        }

        await group.WriteAsync<int>(fields[f], attempts, cancellationToken: cancellationToken).ConfigureAwait(false);
        group.CompleteValidate();
    }

    /// <summary>
    /// One list&lt;float&gt; column: every row's values end to end, with Dremel levels. A value's repetition level is 0
    /// where a row's list starts and 1 inside it; its definition level is the maximum. A failed row is an empty
    /// list: one entry with no value, defined up to the list but not its element.
    /// </summary>
    private static async Task WriteListAsync(ParquetRowGroupWriter group, DataField element, IReadOnlyList<ResultRow> rows, int column, CancellationToken cancellationToken)
    {
        var total = 0;
        var entries = 0;
        foreach (var row in rows)
        {
            var length = row.Outputs?[column].Length ?? 0;
            total += length;
            entries += Math.Max(1, length);
        }

        // Pooled: a part's column is a large-object-heap array, and fresh ones for every part pile up between full
        // collections (peak memory grew with the number of parts until these were reused).
        var values = ArrayPool<float>.Shared.Rent(total);
        var definitions = ArrayPool<int>.Shared.Rent(entries);
        var repetitions = ArrayPool<int>.Shared.Rent(entries);
        try
        {
            Fill(rows, column, element.MaxDefinitionLevel, values, definitions, repetitions);
            await group.WriteAllPartsAsync<float>(element, values.AsMemory(0, total), definitions.AsMemory(0, entries), repetitions.AsMemory(0, entries), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(values);
            ArrayPool<int>.Shared.Return(definitions);
            ArrayPool<int>.Shared.Return(repetitions);
        }
    }

    private static void Fill(IReadOnlyList<ResultRow> rows, int column, int defined, float[] values, int[] definitions, int[] repetitions)
    {
        var (v, e) = (0, 0);
        foreach (var row in rows)
        {
            var output = row.Outputs?[column];
            if (output is null || output.Length == 0)
            {
                definitions[e] = defined - 1;
                repetitions[e++] = 0;
                continue;
            }

            output.CopyTo(values, v);
            v += output.Length;
            for (var i = 0; i < output.Length; i++)
            {
                definitions[e] = defined;
                repetitions[e++] = i == 0 ? 0 : 1;
            }
        }
    }

    private static string?[] Strings(IReadOnlyList<ResultRow> rows, Func<ResultRow, string?> get)
    {
        var values = new string?[rows.Count];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = get(rows[i]);
        }

        return values;
    }

    public override async IAsyncEnumerable<(string Key, bool Ok)> ReadKeysAsync(string path, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var reader = await ParquetReader.CreateAsync(path, cancellationToken: cancellationToken).ConfigureAwait(false);
        await using var _ = reader.ConfigureAwait(false);
        var fields = reader.Schema.GetDataFields();
        var key = fields.FirstOrDefault(f => f.Name == "key") ?? throw new InvalidDataException($"{path} has no key column.");
        var status = fields.FirstOrDefault(f => f.Name == "status") ?? throw new InvalidDataException($"{path} has no status column.");
        for (var g = 0; g < reader.RowGroupCount; g++)
        {
            var group = reader.OpenRowGroupReader(g);
            var keys = new string?[group.RowCount];
            var statuses = new string?[group.RowCount];
            await group.ReadAsync(key, keys.AsMemory(), null, cancellationToken).ConfigureAwait(false);
            await group.ReadAsync(status, statuses.AsMemory(), null, cancellationToken).ConfigureAwait(false);
            for (var i = 0; i < keys.Length; i++)
            {
                yield return (keys[i] ?? throw new InvalidDataException($"{path} has a row without a key."), statuses[i] == "ok");
            }
        }
    }
}
