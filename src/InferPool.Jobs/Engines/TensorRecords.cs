using System.Text.Json;
using InferPool.Onnx;
using InferPool.Onnx.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Jobs.Engines;

/// <summary>
/// Reads the named tensors of a JSONL record for a model: <c>{"inputs": {"input_ids": [[101, 2023, 102]], …}}</c>, or
/// <c>{"input": […]}</c> for a model with one input. Each value is a nested JSON array whose nesting gives its shape and
/// whose element type comes from the model. A tensor with the model input's rank is a whole input (batch dimension
/// included); one with a rank one less is one item.
/// </summary>
public static class TensorRecords
{
    /// <summary>Reads a record's tensors for <paramref name="model"/>.</summary>
    /// <param name="record">The record.</param>
    /// <param name="model">The model whose inputs the tensors feed.</param>
    /// <exception cref="InvalidDataException">A tensor is missing, ragged, of the wrong rank or shape, or holds a value its input's type cannot hold; the message names the input.</exception>
    public static TensorItem Read(JsonElement record, OnnxModel model) => Read(record, model, null);

    /// <summary>
    /// Reads a record's tensors for <paramref name="model"/>, each input from the record's fields that
    /// <paramref name="columns"/> maps to it (a table row): one field is the input's value as it is (a number for an input
    /// of one value per item, else a list), several fields are one item's vector, in the order given.
    /// </summary>
    /// <param name="record">The record (a table row: its cells by column name).</param>
    /// <param name="model">The model whose inputs the tensors feed.</param>
    /// <param name="columns">The fields of each model input, by input name; null reads <c>"inputs"</c> or <c>"input"</c>.</param>
    /// <exception cref="InvalidDataException">A field is missing or a value does not fit; the message names the input (and the column).</exception>
    public static TensorItem Read(JsonElement record, OnnxModel model, IReadOnlyDictionary<string, IReadOnlyList<string>>? columns)
    {
        ArgumentNullException.ThrowIfNull(model);
        var values = columns is null ? Values(record, model) : FromColumns(record, model, columns);
        var tensors = new TensorData[model.Inputs.Count];
        bool? whole = null;
        for (var i = 0; i < tensors.Length; i++)
        {
            var spec = model.Inputs[i];
            tensors[i] = Parse(values[i], spec);
            var rank = tensors[i].Shape.Length;
            bool isWhole;
            if (rank == spec.Shape.Count)
            {
                isWhole = true;
            }
            else if (rank == spec.Shape.Count - 1)
            {
                isWhole = false;
            }
            else
            {
                throw new InvalidDataException($"Input {spec.Name} has rank {rank} ({tensors[i].ShapeText}); model input {spec} takes rank {spec.Shape.Count} (a whole input) or {spec.Shape.Count - 1} (one item).");
            }

            if (whole is { } w && w != isWhole)
            {
                throw new InvalidDataException($"Input {spec.Name} is {(isWhole ? "a whole input" : "one item")} but {model.Inputs[0].Name} is {(w ? "a whole input" : "one item")}; give every input the same way.");
            }

            whole = isWhole;
        }

        TensorItem item;
        try
        {
            item = new TensorItem(tensors, whole ?? false);
        }
        catch (ArgumentException ex)
        {
            throw new InvalidDataException(ex.Message, ex);
        }

        // Fixed dimensions and rows are checked here, so a misfit fails in preparation, alone, not in a model call.
        model.CheckItem(item);
        return item;
    }

    private static JsonElement[] Values(JsonElement record, OnnxModel model)
    {
        if (record.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"The record is a JSON {record.ValueKind}, not an object.");
        }

        if (record.TryGetProperty("inputs", out var inputs))
        {
            if (inputs.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException("\"inputs\" must be an object of named tensors.");
            }

            foreach (var property in inputs.EnumerateObject())
            {
                if (model.Inputs.All(i => i.Name != property.Name))
                {
                    throw new InvalidDataException($"\"inputs\" names '{property.Name}', which is not a model input; the inputs are {string.Join(", ", model.Inputs.Select(i => i.Name))}.");
                }
            }

            return [.. model.Inputs.Select(spec => inputs.TryGetProperty(spec.Name, out var value)
                ? value
                : throw new InvalidDataException($"\"inputs\" has no tensor for input {spec.Name}; the model takes {string.Join(", ", model.Inputs.Select(i => i.Name))}."))];
        }

        if (record.TryGetProperty("input", out var input))
        {
            return model.Inputs.Count == 1
                ? [input]
                : throw new InvalidDataException($"The record has one \"input\"; the model takes {model.Inputs.Count} ({string.Join(", ", model.Inputs.Select(i => i.Name))}): give them as \"inputs\": {{\"name\": […]}}.");
        }

        throw new InvalidDataException($"The record has no \"inputs\" (or \"input\") field; the model takes {string.Join(", ", model.Inputs.Select(i => i.Name))}.");
    }

    private static JsonElement[] FromColumns(JsonElement record, OnnxModel model, IReadOnlyDictionary<string, IReadOnlyList<string>> columns)
    {
        var values = new JsonElement[model.Inputs.Count];
        for (var i = 0; i < values.Length; i++)
        {
            var spec = model.Inputs[i];
            if (!columns.TryGetValue(spec.Name, out var names) || names.Count == 0)
            {
                throw new InvalidDataException($"No column is given for input {spec.Name}.");
            }

            var cells = names.Select(name => record.TryGetProperty(name, out var cell)
                ? cell
                : throw new InvalidDataException($"The row has no column '{name}' for input {spec.Name}.")).ToArray();
            if (cells.Length == 1 && (cells[0].ValueKind == JsonValueKind.Array || spec.Shape.Count == 1))
            {
                values[i] = cells[0];
                continue;
            }

            var buffer = new System.Buffers.ArrayBufferWriter<byte>();
            using (var writer = new Utf8JsonWriter(buffer))
            {
                writer.WriteStartArray();
                foreach (var cell in cells)
                {
                    cell.WriteTo(writer);
                }

                writer.WriteEndArray();
            }

            values[i] = JsonElements.Read(buffer.WrittenMemory);
        }

        return values;
    }

    /// <summary>A nested array (or a single value) as a tensor of <paramref name="spec"/>'s element type.</summary>
    private static TensorData Parse(JsonElement value, TensorSpec spec)
    {
        var shape = new List<long>();
        for (var level = value; level.ValueKind == JsonValueKind.Array; level = level.GetArrayLength() > 0 ? level[0] : default)
        {
            shape.Add(level.GetArrayLength());
            if (level.GetArrayLength() == 0)
            {
                break;
            }
        }

        var length = checked((int)shape.Aggregate(1L, (a, d) => a * d));
        var data = TensorData.NewArray(spec.ElementType, length);
        var at = 0;
        Fill(value, 0, shape, spec, data, ref at);
        return new TensorData(spec.ElementType, [.. shape], data);
    }

    private static void Fill(JsonElement value, int depth, List<long> shape, TensorSpec spec, Array data, ref int at)
    {
        if (depth == shape.Count)
        {
            if (value.ValueKind == JsonValueKind.Array)
            {
                throw new InvalidDataException($"Input {spec.Name} is ragged: an array sits where a value belongs at depth {depth}.");
            }

            Set(value, spec, data, at++);
            return;
        }

        if (value.ValueKind != JsonValueKind.Array || value.GetArrayLength() != shape[depth])
        {
            throw new InvalidDataException($"Input {spec.Name} is ragged: at depth {depth} a {(value.ValueKind == JsonValueKind.Array ? $"list of {value.GetArrayLength()}" : value.ValueKind.ToString())} stands where the first has {shape[depth]}.");
        }

        foreach (var element in value.EnumerateArray())
        {
            Fill(element, depth + 1, shape, spec, data, ref at);
        }
    }

    private static void Set(JsonElement value, TensorSpec spec, Array data, int index)
    {
        if (spec.ElementType == TensorElementType.Bool)
        {
            ((bool[])data)[index] = value.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                JsonValueKind.Number when value.TryGetInt64(out var n) && n is 0 or 1 => n == 1,
                _ => throw Misfit(value, spec),
            };
            return;
        }

        if (value.ValueKind != JsonValueKind.Number)
        {
            throw Misfit(value, spec);
        }

        switch (data)
        {
            case float[] f: f[index] = value.GetSingle(); break;
            case double[] d: d[index] = value.GetDouble(); break;
            case Float16[] h: h[index] = (Float16)value.GetSingle(); break;
            case long[] l: l[index] = value.TryGetInt64(out var v64) ? v64 : throw Misfit(value, spec); break;
            case int[] n: n[index] = value.TryGetInt32(out var v32) ? v32 : throw Misfit(value, spec); break;
            case sbyte[] s when s.GetType() == typeof(sbyte[]): s[index] = value.TryGetSByte(out var v8) ? v8 : throw Misfit(value, spec); break;
            case byte[] b: b[index] = value.TryGetByte(out var u8) ? u8 : throw Misfit(value, spec); break;
        }
    }

    private static InvalidDataException Misfit(JsonElement value, TensorSpec spec)
    {
        var text = value.ValueKind == JsonValueKind.String ? $"the string \"{value.GetString()}\"" : value.GetRawText();
        return new InvalidDataException($"Input {spec.Name} holds {text}, which is not a valid {spec.ElementType.ToString().ToLowerInvariant()} value.");
    }

    /// <summary>The column an output is written to, with its element type and item shape.</summary>
    internal static Parts.OutputColumn Column(TensorSpec output, string name) => new(name)
    {
        ElementType = output.ElementType,
        ItemShape = output.Shape.Count == 0 ? [] : output.ItemShape,
    };

}
