using Parquet.Schema;
using Parquet.Serialization;

namespace InferPool.Cli.Output;

/// <summary>
/// Parquet parts: <c>key</c>, <c>status</c>, <c>error</c>, one list&lt;float&gt; column per model output (or a
/// string column of JSON text for a worker's output kept as JSON), <c>device</c>, <c>replica</c>, <c>attempts</c>.
/// A failed row has an empty list (or null JSON) for each output.
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

    public override async Task WriteAsync(Stream stream, IReadOnlyList<ResultRow> rows, IReadOnlyList<OutputColumn> columns, CancellationToken cancellationToken)
    {
        var data = new List<IDictionary<string, object?>>(rows.Count);
        foreach (var row in rows)
        {
            var record = new Dictionary<string, object?>(StringComparer.Ordinal)
            {
                ["key"] = row.Key,
                ["status"] = row.Status,
                ["error"] = row.Error,
                ["device"] = row.Device,
                ["replica"] = row.Replica,
                ["attempts"] = row.Attempts,
            };
            for (var c = 0; c < columns.Count; c++)
            {
                record[columns[c].Name] = columns[c].IsJson ? row.Json
                    : row.Outputs is null ? new List<float>() : new List<float>(row.Outputs[c]);
            }

            data.Add(record);
        }

        await ParquetSerializer.SerializeUntypedAsync(data, Schema(columns), stream, cancellationToken: cancellationToken).ConfigureAwait(false);
    }
}
