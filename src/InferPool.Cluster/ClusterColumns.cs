using System.Text.Json.Nodes;
using InferPool.Jobs.Parts;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Cluster;

/// <summary>A job's output columns as stored with the job (<see cref="ClusterJob.Columns"/>), so that an export writes the columns a local run of the same engine writes.</summary>
public static class ClusterColumns
{
    /// <summary>The columns as JSON: an array of objects with <c>name</c>, <c>json</c>, <c>type</c> and <c>shape</c> (null when unknown).</summary>
    /// <param name="columns">The engine's columns.</param>
    public static string Serialize(IReadOnlyList<OutputColumn> columns)
    {
        ArgumentNullException.ThrowIfNull(columns);
        var array = new JsonArray();
        foreach (var c in columns)
        {
            array.Add(new JsonObject
            {
                ["name"] = c.Name,
                ["json"] = c.IsJson,
                ["type"] = c.ElementType.ToString(),
                ["shape"] = c.ItemShape is { } shape ? new JsonArray([.. shape.Select(d => (JsonNode)d)]) : null,
            });
        }

        return array.ToJsonString();
    }

    /// <summary>The columns <see cref="Serialize"/> wrote.</summary>
    /// <param name="json">The stored text.</param>
    /// <exception cref="FormatException">The text is not such a list.</exception>
    public static IReadOnlyList<OutputColumn> Parse(string json)
    {
        try
        {
            return [.. JsonNode.Parse(json)!.AsArray().Select(n => new OutputColumn((string)n!["name"]!, (bool)n["json"]!)
            {
                ElementType = Enum.Parse<TensorElementType>((string)n["type"]!),
                ItemShape = n["shape"] is JsonArray shape ? [.. shape.Select(d => (long)d!)] : null,
            })];
        }
        catch (Exception ex) when (ex is System.Text.Json.JsonException or InvalidOperationException or NullReferenceException or ArgumentException)
        {
            throw new FormatException($"The job's stored columns cannot be read: {json}", ex);
        }
    }
}
