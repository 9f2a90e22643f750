using System.Runtime.CompilerServices;
using System.Text.Json;

namespace InferPool.Jobs.Parts;

/// <summary>JSONL parts: one object per row with the same fields as the Parquet columns; a failed row's outputs are null.</summary>
internal sealed class JsonlFormat : OutputFormat
{
    private static readonly byte[] NewLine = "\n"u8.ToArray();

    public override string Name => "jsonl";

    public override string Extension => ".jsonl";

    public override async Task WriteAsync(Stream stream, IReadOnlyList<ResultRow> rows, IReadOnlyList<OutputColumn> columns, CancellationToken cancellationToken = default)
    {
        var writer = new Utf8JsonWriter(stream);
        await using var _ = writer.ConfigureAwait(false);
        foreach (var row in rows)
        {
            writer.WriteStartObject();
            writer.WriteString("key", row.Key);
            writer.WriteString("status", row.Status);
            writer.WriteString("error", row.Error);
            for (var c = 0; c < columns.Count; c++)
            {
                var name = columns[c].Name;
                if (columns[c].IsJson && row.Json is not null)
                {
                    // The worker's output as it gave it, not as a string.
                    writer.WritePropertyName(name);
                    writer.WriteRawValue(row.Json, skipInputValidation: true);
                    continue;
                }

                if (row.Outputs is null || columns[c].IsJson)
                {
                    writer.WriteNull(name);
                    continue;
                }

                writer.WriteStartArray(name);
                foreach (var value in row.Outputs[c])
                {
                    writer.WriteNumberValue(value);
                }

                writer.WriteEndArray();
            }

            writer.WriteString("device", row.Device);
            writer.WriteString("replica", row.Replica);
            writer.WriteNumber("attempts", row.Attempts);
            writer.WriteEndObject();
            await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
            writer.Reset();
            await stream.WriteAsync(NewLine, cancellationToken).ConfigureAwait(false);
        }
    }

    public override async IAsyncEnumerable<(string Key, bool Ok)> ReadKeysAsync(string path, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var reader = new StreamReader(path);
        while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
        {
            (string Key, bool Ok) row;
            try
            {
                using var doc = JsonDocument.Parse(line);
                row = (doc.RootElement.GetProperty("key").GetString()!, doc.RootElement.GetProperty("status").GetString() == "ok");
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new InvalidDataException($"{path} holds a line that is not a result row: {ex.Message}", ex);
            }

            yield return row;
        }
    }
}
