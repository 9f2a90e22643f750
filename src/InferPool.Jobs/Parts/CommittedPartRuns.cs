using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace InferPool.Jobs.Parts;

/// <summary>
/// Writes a journal's part list as runs: consecutive parts (<c>part-00007.parquet</c>, <c>part-00008.parquet</c>, …)
/// with the same row count are one entry, <c>{"name": "part-00007.parquet", "rows": 1000, "count": 993}</c>. The
/// journal is rewritten after every part; listing each part made that O(parts) per part and O(parts²) over a job
/// (10,000 parts would have written about 3 GB of journal), where runs keep it a few entries long. An entry without
/// a count is one part, so journals that list every part (version 1) read the same.
/// </summary>
internal sealed class CommittedPartRuns : JsonConverter<List<CommittedPart>>
{
    public override List<CommittedPart> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new JsonException("The parts are not a list.");
        }

        var parts = new List<CommittedPart>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                throw new JsonException("A part is not an object.");
            }

            string? name = null;
            long rows = -1;
            long count = 1;
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                var property = reader.GetString();
                reader.Read();
                switch (property)
                {
                    case "name":
                        name = reader.GetString();
                        break;
                    case "rows":
                        rows = reader.GetInt64();
                        break;
                    case "count":
                        count = reader.GetInt64();
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }

            if (name is null || rows < 0 || count < 1)
            {
                throw new JsonException($"A part entry needs a name, rows and a positive count (found {name ?? "no name"}, {rows}, {count}).");
            }

            if (count > 1 && !TryParse(name, out _, out _, out _))
            {
                throw new JsonException($"The run of {count} parts from {name} does not start at a numbered part.");
            }

            parts.Add(new CommittedPart(name, rows));
            for (var i = 1; i < count; i++)
            {
                parts.Add(new CommittedPart(Next(parts[^1].Name)!, rows));
            }
        }

        return parts;
    }

    public override void Write(Utf8JsonWriter writer, List<CommittedPart> value, JsonSerializerOptions options)
    {
        writer.WriteStartArray();
        var i = 0;
        while (i < value.Count)
        {
            var first = value[i];
            var count = 1;
            while (i + count < value.Count && value[i + count].Rows == first.Rows && value[i + count].Name == Next(value[i + count - 1].Name))
            {
                count++;
            }

            writer.WriteStartObject();
            writer.WriteString("name", first.Name);
            writer.WriteNumber("rows", first.Rows);
            if (count > 1)
            {
                writer.WriteNumber("count", count);
            }

            writer.WriteEndObject();
            i += count;
        }

        writer.WriteEndArray();
    }

    /// <summary>The part after <paramref name="name"/> (<c>part-00041.jsonl</c> → <c>part-00042.jsonl</c>), or null for a name that is not numbered.</summary>
    private static string? Next(string name) =>
        TryParse(name, out var prefix, out var number, out var extension)
            ? string.Create(CultureInfo.InvariantCulture, $"{prefix}{number + 1:D5}{extension}")
            : null;

    private static bool TryParse(string name, out string prefix, out long number, out string extension)
    {
        prefix = PartWriter.PartPrefix;
        extension = "";
        number = 0;
        if (!name.StartsWith(prefix, StringComparison.Ordinal))
        {
            return false;
        }

        var dot = name.IndexOf('.', prefix.Length);
        var digits = dot < 0 ? name[prefix.Length..] : name[prefix.Length..dot];
        extension = dot < 0 ? "" : name[dot..];
        return digits.Length >= 5 && digits.All(char.IsAsciiDigit) && long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out number)
            && string.Create(CultureInfo.InvariantCulture, $"{number:D5}") == digits;
    }
}
