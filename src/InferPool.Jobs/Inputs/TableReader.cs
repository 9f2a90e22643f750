using System.Buffers;
using System.Collections;
using System.Globalization;
using System.Text.Json;
using nietras.SeparatedValues;
using Parquet;
using Parquet.Schema;
using Parquet.Serialization;

namespace InferPool.Jobs.Inputs;

/// <summary>
/// Rows of a CSV (or TSV) file or a Parquet file as items: each row becomes a record (a JSON object of its cells, by
/// column name), keyed by a column or by its row number. CSV is read as a stream with Sep; Parquet one row group at a
/// time, so a large table never sits in memory. A missing column stops the job before it starts; a bad row fails alone.
/// </summary>
internal sealed class TableReader
{
    private readonly string _path;
    private readonly TableOptions _options;
    private readonly bool _parquet;

    private TableReader(string path, TableOptions options, bool parquet, IReadOnlyList<string> columns)
    {
        _path = path;
        _options = options;
        _parquet = parquet;
        Columns = columns;
    }

    /// <summary>The key column, or null when rows are keyed by their number.</summary>
    public string? KeyColumn => _options.KeyColumn;

    /// <summary>The table's column names, in order.</summary>
    public IReadOnlyList<string> Columns { get; }

    public static bool IsTable(string path) =>
        path.EndsWith(".csv", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase);

    /// <summary>Opens a table and checks its columns.</summary>
    /// <exception cref="InvalidDataException">A column the options name is missing, or a text column is not text; the message names the column and the file.</exception>
    public static TableReader Open(string path, TableOptions options)
    {
        try
        {
            return OpenChecked(path, options);
        }
        catch (Exception ex) when (ex is not (InvalidDataException or FileNotFoundException or UnauthorizedAccessException or OutOfMemoryException))
        {
            throw new InvalidDataException($"'{path}' could not be read as a {(path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase) ? "Parquet file" : "CSV file with a header row")}: {ex.Message}", ex);
        }
    }

    private static TableReader OpenChecked(string path, TableOptions options)
    {
        var parquet = path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase);
        IReadOnlyList<string> columns;
        if (parquet)
        {
            var schema = WithParquet(path, reader => reader.Schema);
            columns = [.. schema.Fields.Select(f => f.Name)];
            if (options.TextColumn is { } text && schema.Fields.FirstOrDefault(f => f.Name == text) is DataField { } field && field.ClrType != typeof(string))
            {
                throw new InvalidDataException($"Column '{text}' of {path} holds {field.ClrType.Name} values, not text.");
            }
        }
        else
        {
            using var reader = CsvReader(path);
            columns = [.. reader.Header.ColNames];
        }

        var needed = new[] { options.KeyColumn, options.TextColumn }.OfType<string>().Concat(options.RequiredColumns);
        if (needed.FirstOrDefault(c => !columns.Contains(c, StringComparer.Ordinal)) is { } missing)
        {
            throw new InvalidDataException($"Column '{missing}' is not in {path}; its columns are {string.Join(", ", columns)}.");
        }

        return new TableReader(path, options, parquet, columns);
    }

    public IEnumerable<InputItem> Read(long first) => _parquet ? ReadParquet(first) : ReadCsv(first);

    public long Count()
    {
        if (_parquet)
        {
            return RowGroupSizes(_path).Sum();
        }

        using var csv = CsvReader(_path);
        long rows = 0;
        foreach (var _ in csv)
        {
            rows++;
        }

        return rows;
    }

    private static long[] RowGroupSizes(string path) => WithParquet(path, reader =>
        Enumerable.Range(0, reader.RowGroupCount).Select(g =>
        {
            using var group = reader.OpenRowGroupReader(g);
            return group.RowCount;
        }).ToArray());

    /// <summary>Reads something from a Parquet file's footer (the reader is asynchronous-only; the items are read on one thread anyway).</summary>
    private static T WithParquet<T>(string path, Func<ParquetReader, T> read)
    {
        using var stream = File.OpenRead(path);
        var reader = ParquetReader.CreateAsync(stream).GetAwaiter().GetResult();
        try
        {
            return read(reader);
        }
        finally
        {
            reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private static SepReader CsvReader(string path) =>
        Sep.Reader(o => o with { Unescape = true, DisableColCountCheck = true, Sep = path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase) ? new Sep('\t') : new Sep(',') }).FromFile(path);

    private IEnumerable<InputItem> ReadCsv(long first)
    {
        using var reader = CsvReader(_path);
        var names = reader.Header.ColNames;
        long number = 0;
        foreach (var row in reader)
        {
            number++;
            if (number <= first)
            {
                continue;
            }

            var fallback = number.ToString(CultureInfo.InvariantCulture);
            if (row.ColCount != names.Count)
            {
                yield return InputItem.Unusable(KeyOf(row, names, fallback), $"Row {number} of {_path} (line {row.LineNumberFrom}) has {row.ColCount} field(s); the header has {names.Count}.");
                continue;
            }

            var buffer = new ArrayBufferWriter<byte>();
            using (var writer = new Utf8JsonWriter(buffer))
            {
                writer.WriteStartObject();
                for (var c = 0; c < names.Count; c++)
                {
                    writer.WritePropertyName(names[c]);
                    WriteCell(writer, row[c].ToString());
                }

                writer.WriteEndObject();
            }

            yield return Item(JsonElements.Read(buffer.WrittenMemory), number);
        }
    }

    private IEnumerable<InputItem> ReadParquet(long first)
    {
        var counts = RowGroupSizes(_path);
        var groups = counts.Length;
        using var stream = File.OpenRead(_path);

        long number = 0;
        for (var g = 0; g < groups; g++)
        {
            if (number + counts[g] <= first)
            {
                // A whole row group before the first item is skipped without reading it.
                number += counts[g];
                continue;
            }

            stream.Position = 0;
            var rows = ParquetSerializer.DeserializeUntypedAsync(stream, rowGroupIndex: g).GetAwaiter().GetResult().Data;
            foreach (var row in rows)
            {
                number++;
                if (number <= first)
                {
                    continue;
                }

                var buffer = new ArrayBufferWriter<byte>();
                using (var writer = new Utf8JsonWriter(buffer))
                {
                    writer.WriteStartObject();
                    foreach (var (name, value) in row)
                    {
                        writer.WritePropertyName(name);
                        WriteValue(writer, value);
                    }

                    writer.WriteEndObject();
                }

                yield return Item(JsonElements.Read(buffer.WrittenMemory), number);
            }
        }
    }

    private InputItem Item(JsonElement record, long number)
    {
        var key = number.ToString(CultureInfo.InvariantCulture);
        if (_options.KeyColumn is { } keyColumn)
        {
            var cell = record.GetProperty(keyColumn);
            if (cell.ValueKind is JsonValueKind.Null)
            {
                return InputItem.Unusable(key, $"Row {number} of {_path} has no value in its key column '{keyColumn}'.");
            }

            key = cell.ValueKind == JsonValueKind.String ? cell.GetString()! : cell.GetRawText();
        }

        if (_options.TextColumn is { } textColumn)
        {
            var text = record.GetProperty(textColumn);
            return text.ValueKind == JsonValueKind.String
                ? new InputItem { Key = key, Text = text.GetString() }
                : InputItem.Unusable(key, $"Row {number} of {_path} has no text in column '{textColumn}' (a {text.ValueKind}).");
        }

        return new InputItem { Key = key, Record = record };
    }

    private string KeyOf(SepReader.Row row, IReadOnlyList<string> names, string fallback)
    {
        if (_options.KeyColumn is null)
        {
            return fallback;
        }

        var index = names.ToList().IndexOf(_options.KeyColumn);
        return index < row.ColCount && row[index].ToString() is { Length: > 0 } key ? key : fallback;
    }

    /// <summary>A CSV cell as JSON: a number or a boolean when it reads as one, null when empty, else a string.</summary>
    private static void WriteCell(Utf8JsonWriter writer, string cell)
    {
        var text = cell.Trim();
        if (text.Length == 0)
        {
            writer.WriteNullValue();
        }
        else if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var integer))
        {
            writer.WriteNumberValue(integer);
        }
        else if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var number) && double.IsFinite(number))
        {
            writer.WriteRawValue(text.TrimStart('+'), skipInputValidation: false);
        }
        else if (bool.TryParse(text, out var flag))
        {
            writer.WriteBooleanValue(flag);
        }
        else
        {
            writer.WriteStringValue(cell);
        }
    }

    private static void WriteValue(Utf8JsonWriter writer, object? value)
    {
        switch (value)
        {
            case null: writer.WriteNullValue(); break;
            case string s: writer.WriteStringValue(s); break;
            case bool b: writer.WriteBooleanValue(b); break;
            case float f when float.IsFinite(f): writer.WriteNumberValue(f); break;
            case double d when double.IsFinite(d): writer.WriteNumberValue(d); break;
            case float or double: writer.WriteNullValue(); break;
            case decimal m: writer.WriteNumberValue(m); break;
            case sbyte or byte or short or ushort or int or uint or long: writer.WriteNumberValue(Convert.ToInt64(value, CultureInfo.InvariantCulture)); break;
            case ulong u: writer.WriteNumberValue(u); break;
            case DateTime t: writer.WriteStringValue(t.ToString("O", CultureInfo.InvariantCulture)); break;
            case IDictionary dictionary:
                writer.WriteStartObject();
                foreach (DictionaryEntry entry in dictionary)
                {
                    writer.WritePropertyName(Convert.ToString(entry.Key, CultureInfo.InvariantCulture) ?? "");
                    WriteValue(writer, entry.Value);
                }

                writer.WriteEndObject();
                break;
            case IEnumerable list:
                writer.WriteStartArray();
                foreach (var element in list)
                {
                    WriteValue(writer, element);
                }

                writer.WriteEndArray();
                break;
            default: writer.WriteStringValue(Convert.ToString(value, CultureInfo.InvariantCulture)); break;
        }
    }
}
