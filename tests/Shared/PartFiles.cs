using System.Diagnostics;
using InferPool.Jobs.Parts;
using Parquet.Serialization;
using Xunit;

namespace InferPool.TestKit;

/// <summary>Reads a job's output parts back, independently of the code that wrote them (Parquet.Net's own row reader).</summary>
internal static class PartFiles
{
    internal static async Task<Dictionary<string, Dictionary<string, object>>> ReadParquetAsync(string output)
    {
        var rows = new Dictionary<string, Dictionary<string, object>>(StringComparer.Ordinal);
        foreach (var part in Directory.GetFiles(output, "part-*.parquet"))
        {
            await using var stream = File.OpenRead(part);
            var data = await ParquetSerializer.DeserializeUntypedAsync(stream);
            foreach (var row in data.Data)
            {
                rows.Add((string)row["key"]!, row);
            }
        }

        return rows;
    }

    internal static async Task<Dictionary<string, float[]>> ReadJsonlAsync(string output)
    {
        var rows = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var part in Directory.GetFiles(output, "part-*.jsonl"))
        {
            foreach (var line in await File.ReadAllLinesAsync(part))
            {
                using var doc = System.Text.Json.JsonDocument.Parse(line);
                var embedding = doc.RootElement.GetProperty("embedding");
                rows.Add(
                    doc.RootElement.GetProperty("key").GetString()!,
                    embedding.ValueKind == System.Text.Json.JsonValueKind.Null ? [] : [.. embedding.EnumerateArray().Select(e => e.GetSingle())]);
            }
        }

        return rows;
    }

    /// <summary>Every row's key in the Parquet parts of <paramref name="output"/>, duplicates included.</summary>
    public static async Task<List<string>> ReadParquetKeysAsync(string output)
    {
        var keys = new List<string>();
        foreach (var part in Directory.GetFiles(output, "part-*.parquet"))
        {
            await using var stream = File.OpenRead(part);
            var data = await ParquetSerializer.DeserializeUntypedAsync(stream);
            keys.AddRange(data.Data.Select(row => (string)row["key"]!));
        }

        return keys;
    }

    /// <summary>Waits until the job journal in <paramref name="output"/> lists <paramref name="parts"/> committed parts; fails if the process ends first or nothing changes within <paramref name="bound"/>.</summary>
    public static async Task WaitForCommittedPartsAsync(string output, int parts, Process process, TimeSpan bound)
    {
        // Woken by the journal's atomic rename, which the tool does after every committed part; bounded.
        Directory.CreateDirectory(output);
        using var changed = new SemaphoreSlim(0);
        using var watcher = new FileSystemWatcher(output) { NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite };
        watcher.Renamed += (_, _) => changed.Release();
        watcher.Created += (_, _) => changed.Release();
        watcher.EnableRaisingEvents = true;
        var exited = process.WaitForExitAsync();
        while ((JobJournal.Load(output)?.Parts.Count ?? 0) < parts)
        {
            Assert.False(exited.IsCompleted, $"the run ended before {parts} parts were committed");
            var woken = changed.WaitAsync(bound);
            await Task.WhenAny(woken, exited);
            Assert.True(exited.IsCompleted || await woken, $"no {parts} committed parts within {bound}");
        }
    }
}
