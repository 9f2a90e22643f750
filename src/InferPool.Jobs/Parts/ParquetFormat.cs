using System.Buffers;
using System.Runtime.CompilerServices;
using InferPool.Onnx.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Parquet;
using Parquet.Schema;

namespace InferPool.Jobs.Parts;

/// <summary>
/// Parquet parts: <c>key</c>, <c>status</c>, <c>error</c>, one list column per model output (list&lt;float&gt;,
/// list&lt;double&gt;, list&lt;int64&gt;, list&lt;int32&gt; or list&lt;boolean&gt;, the output's values flattened
/// row-major; or a string column of JSON text for a worker's output kept as JSON), <c>device</c>, <c>replica</c>,
/// <c>attempts</c>. Each output's item shape is in the file's key-value metadata as <c>inferpool.shape.NAME</c>
/// (e.g. <c>[384]</c>, or <c>[sequence,384]</c> where a dimension varies); where it varies, a list&lt;int64&gt; column
/// <c>NAME_shape</c> holds each row's own shape. A failed row has an empty list (or null JSON) for each output.
/// Written column by column straight from the rows: no per-row objects, and the only large buffer is one output
/// column's values at a time.
/// </summary>
internal sealed class ParquetFormat : OutputFormat
{
    /// <summary>The most values of one output column in a row group (see <see cref="RowGroups"/>).</summary>
    internal const int GroupValues = 1 << 16;

    public override string Name => "parquet";

    public override string Extension => ".parquet";

    public static ParquetSchema Schema(IReadOnlyList<OutputColumn> columns) => new(
    [
        new DataField<string>("key"),
        new DataField<string>("status"),
        new DataField<string>("error", true),
        .. columns.SelectMany(OutputFields),
        new DataField<string>("device", true),
        new DataField<string>("replica", true),
        new DataField<int>("attempts"),
    ]);

    /// <summary>The metadata key that holds an output column's item shape.</summary>
    public static string ShapeKey(string column) => "inferpool.shape." + column;

    private static IEnumerable<Field> OutputFields(OutputColumn column)
    {
        if (column.IsJson)
        {
            yield return new DataField<string>(column.Name, true);
            yield break;
        }

        yield return new ListField(column.Name, ColumnType(column.ElementType) switch
        {
            TensorElementType.Double => new DataField<double>("element"),
            TensorElementType.Int64 => new DataField<long>("element"),
            TensorElementType.Int32 => new DataField<int>("element"),
            TensorElementType.Bool => new DataField<bool>("element"),
            _ => new DataField<float>("element"),
        });
        if (column.HasRowShapes)
        {
            yield return new ListField(column.Name + "_shape", new DataField<long>("element"));
        }
    }

    /// <summary>The type a column stores an element type as: float16 as float, int8 and uint8 as int32.</summary>
    private static TensorElementType ColumnType(TensorElementType type) => type switch
    {
        TensorElementType.Float16 => TensorElementType.Float,
        TensorElementType.Int8 or TensorElementType.UInt8 => TensorElementType.Int32,
        _ => type,
    };

    private static string ShapeText(IReadOnlyList<long> shape) => "[" + string.Join(",", shape.Select(d => d < 0 ? "?" : d.ToString(System.Globalization.CultureInfo.InvariantCulture))) + "]";

    public override async Task WriteAsync(Stream stream, IReadOnlyList<ResultRow> rows, IReadOnlyList<OutputColumn> columns, CancellationToken cancellationToken = default)
    {
        var schema = Schema(columns);
        var fields = schema.GetDataFields();
        var writer = await ParquetWriter.CreateAsync(schema, stream, cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (writer.ConfigureAwait(false))
        {
            writer.CustomMetadata = columns.Where(c => c.ItemShape is not null).ToDictionary(c => ShapeKey(c.Name), c => ShapeText(c.ItemShape!));
            foreach (var (start, count) in RowGroups(rows, columns.Count))
            {
                await WriteGroupAsync(writer, fields, new RowRange(rows, start, count), columns, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// The part's rows cut into row groups of at most <see cref="GroupValues"/> values in any output column (a group
    /// always has at least one row). A list column's buffers, and the level arrays Parquet.Net encodes from them, grow
    /// with a group's values: one group per part made them a function of the output's width (a part of 1,000 rows of 256
    /// floats: 1 MB each, and a 2 MB encoding buffer that the shared array pool keeps for every thread that ever wrote a
    /// part: 15 MB over a long job). Bounded here (a level array 256 KB, the encoding buffer 512 KB), they no longer
    /// depend on the output's width or the part's size. A row wider than the bound is a group of its own.
    /// </summary>
    internal static IEnumerable<(int Start, int Count)> RowGroups(IReadOnlyList<ResultRow> rows, int outputs)
    {
        var totals = new long[outputs];
        var start = 0;
        for (var r = 0; r < rows.Count; r++)
        {
            var fits = true;
            for (var c = 0; c < outputs && fits; c++)
            {
                fits = totals[c] + Width(rows[r], c) <= GroupValues;
            }

            if (!fits && r > start)
            {
                yield return (start, r - start);
                start = r;
                Array.Clear(totals);
            }

            for (var c = 0; c < outputs; c++)
            {
                totals[c] += Width(rows[r], c);
            }
        }

        if (rows.Count > start || rows.Count == 0)
        {
            yield return (start, rows.Count - start);
        }

        static long Width(ResultRow row, int column) => row.Outputs is { } outputs && column < outputs.Count ? outputs[column].Length : 0;
    }

    private static async Task WriteGroupAsync(ParquetWriter writer, DataField[] fields, RowRange rows, IReadOnlyList<OutputColumn> columns, CancellationToken cancellationToken)
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
                await WriteListAsync(group, field, rows, c, ColumnType(columns[c].ElementType), cancellationToken).ConfigureAwait(false);
                if (columns[c].HasRowShapes)
                {
                    await WriteListAsync<long>(group, fields[f++], rows, c, static t => t.Shape, cancellationToken).ConfigureAwait(false);
                }
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

    private static Task WriteListAsync(ParquetRowGroupWriter group, DataField element, RowRange rows, int column, TensorElementType type, CancellationToken cancellationToken) => type switch
    {
        TensorElementType.Double => WriteListAsync<double>(group, element, rows, column, static t => (double[])t.Values, cancellationToken),
        TensorElementType.Int64 => WriteListAsync<long>(group, element, rows, column, static t => (long[])t.Values, cancellationToken),
        TensorElementType.Int32 => WriteListAsync<int>(group, element, rows, column, static t => t.Values switch
        {
            sbyte[] s when s.GetType() == typeof(sbyte[]) => Array.ConvertAll(s, v => (int)v),
            byte[] b => Array.ConvertAll(b, v => (int)v),
            var v => (int[])v,
        }, cancellationToken),
        TensorElementType.Bool => WriteListAsync<bool>(group, element, rows, column, static t => (bool[])t.Values, cancellationToken),
        _ => WriteListAsync<float>(group, element, rows, column, static t => t.Values is Float16[] h ? Array.ConvertAll(h, v => (float)v) : (float[])t.Values, cancellationToken),
    };

    /// <summary>
    /// One list column: every row's values end to end, with Dremel levels. A value's repetition level is 0 where a
    /// row's list starts and 1 inside it; its definition level is the maximum. A failed row is an empty list: one entry
    /// with no value, defined up to the list but not its element.
    /// </summary>
    private static async Task WriteListAsync<T>(ParquetRowGroupWriter group, DataField element, RowRange rows, int column, Func<TensorData, T[]> values, CancellationToken cancellationToken)
        where T : struct
    {
        var lists = new T[]?[rows.Count];
        var total = 0;
        var entries = 0;
        for (var r = 0; r < rows.Count; r++)
        {
            lists[r] = rows[r].Outputs?[column] is { } output ? values(output) : null;
            var length = lists[r]?.Length ?? 0;
            total += length;
            entries += Math.Max(1, length);
        }

        // Pooled: a part's column is a large-object-heap array, and fresh ones for every part pile up between full
        // collections (peak memory grew with the number of parts until these were reused). Not the shared pool:
        // rented on one thread and returned on another (the writes are async), its arrays ended in other threads'
        // slots, and about one part in ten rented a new one.
        var flat = ColumnBuffers<T>.Pool.Rent(total);
        var definitions = ColumnBuffers<int>.Pool.Rent(entries);
        var repetitions = ColumnBuffers<int>.Pool.Rent(entries);
        try
        {
            var defined = element.MaxDefinitionLevel;
            var (v, e) = (0, 0);
            foreach (var list in lists)
            {
                if (list is null || list.Length == 0)
                {
                    definitions[e] = defined - 1;
                    repetitions[e++] = 0;
                    continue;
                }

                list.CopyTo(flat, v);
                v += list.Length;
                for (var i = 0; i < list.Length; i++)
                {
                    definitions[e] = defined;
                    repetitions[e++] = i == 0 ? 0 : 1;
                }
            }

            await group.WriteAllPartsAsync<T>(element, flat.AsMemory(0, total), definitions.AsMemory(0, entries), repetitions.AsMemory(0, entries), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ColumnBuffers<T>.Pool.Return(flat);
            ColumnBuffers<int>.Pool.Return(definitions);
            ColumnBuffers<int>.Pool.Return(repetitions);
        }
    }

    private static string?[] Strings(RowRange rows, Func<ResultRow, string?> get)
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

/// <summary>Rows <c>start</c> to <c>start + count</c> of a part: the rows of one row group.</summary>
internal readonly struct RowRange(IReadOnlyList<ResultRow> rows, int start, int count)
{
    public int Count => count;

    public ResultRow this[int index] => (uint)index < (uint)count ? rows[start + index] : throw new ArgumentOutOfRangeException(nameof(index));
}

/// <summary>The buffers parts' columns are built in: a pool that any thread returns to, a few arrays of each size.</summary>
internal static class ColumnBuffers<T>
{
    /// <summary>Columns up to 2²⁶ values are pooled (a row group holds at most <see cref="ParquetFormat.GroupValues"/> unless one row is wider); larger ones are allocated.</summary>
    public static readonly ArrayPool<T> Pool = ArrayPool<T>.Create(1 << 26, 4);
}
