using System.Text.Json;

namespace InferPool.Jobs;

/// <summary>JSON that this library writes itself (a table row as a record, a vector from columns), read back as an element.</summary>
internal static class JsonElements
{
    /// <summary>The element <paramref name="json"/> holds, independent of any document (so nothing pooled is left undisposed).</summary>
    public static JsonElement Read(ReadOnlyMemory<byte> json)
    {
        using var document = JsonDocument.Parse(json);
        return document.RootElement.Clone();
    }
}
