using System.Runtime.CompilerServices;
using System.Text.Json;
using InferPool.Onnx.Tensors;
using Microsoft.ML.OnnxRuntime;

namespace InferPool.Jobs.Parts;

/// <summary>
/// JSONL parts: one object per row with the same fields as the Parquet columns; each output is a nested array in the
/// item's own shape (a flat array for a vector; a number for a scalar), and a failed row's outputs are null.
/// </summary>
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

                writer.WritePropertyName(name);
                var output = row.Outputs[c];
                var at = 0;
                WriteNested(writer, output.Values, columns[c].ItemShape is null ? [output.Length] : output.Shape, 0, ref at);
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

    /// <summary>Writes values from <paramref name="at"/> as arrays nested by <paramref name="shape"/>, from dimension <paramref name="dimension"/>.</summary>
    private static void WriteNested(Utf8JsonWriter writer, Array values, long[] shape, int dimension, ref int at)
    {
        if (dimension == shape.Length)
        {
            WriteValue(writer, values, at++);
            return;
        }

        writer.WriteStartArray();
        for (var i = 0; i < shape[dimension]; i++)
        {
            WriteNested(writer, values, shape, dimension + 1, ref at);
        }

        writer.WriteEndArray();
    }

    private static void WriteValue(Utf8JsonWriter writer, Array values, int index)
    {
        switch (values)
        {
            case float[] f: writer.WriteNumberValue(f[index]); break;
            case double[] d: writer.WriteNumberValue(d[index]); break;
            case Float16[] h: writer.WriteNumberValue((float)h[index]); break;
            case long[] l: writer.WriteNumberValue(l[index]); break;
            case int[] n: writer.WriteNumberValue(n[index]); break;
            case sbyte[] s when s.GetType() == typeof(sbyte[]): writer.WriteNumberValue(s[index]); break;
            case byte[] b: writer.WriteNumberValue(b[index]); break;
            case bool[] t: writer.WriteBooleanValue(t[index]); break;
            default: throw new InvalidOperationException($"Unexpected output array {values.GetType().Name}.");
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
