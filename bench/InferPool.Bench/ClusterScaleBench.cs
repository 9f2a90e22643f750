using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using InferPool.Cluster;
using Npgsql;

namespace InferPool.Bench;

/// <summary>
/// The cluster's control plane at scale: the real store on a real PostgreSQL, driven by simulated nodes (light
/// loops that lease a shard, wait as if working, and commit its results) over one large job. Reports leases and
/// commits per second, their latencies, status-query latency at the end, and the database size per million rows.
/// The coordinator grain is a stateless pass-through to the same store calls (one RPC hop more), so it is not in
/// the loop here.
/// </summary>
internal static class ClusterScaleBench
{
    public static async Task RunAsync(string connection, int nodes, long items, int shardSize, int workMs, int dimensions)
    {
        await NodeHost.PrepareDatabaseAsync(connection);
        await using var database = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(connection) { MaxPoolSize = nodes + 10 }.ConnectionString);
        var store = new ClusterStore(database);
        var job = $"scale-{DateTime.UtcNow:HHmmss}";
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{nodes} simulated nodes, {items:N0} items in shards of {shardSize}, {workMs} ms of 'work' per shard, vectors of {dimensions} floats; {Environment.ProcessorCount} cores, PostgreSQL on this machine"));

        var submit = Stopwatch.StartNew();
        await store.CreateJobAsync(new ClusterJob(job, "/scale.jsonl", "resnet18", 1, shardSize, 0, 600, "running"), Manifest(items), CancellationToken.None);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"submit (manifest of {items:N0} keys and {(items + shardSize - 1) / shardSize:N0} shards, one transaction): {submit.Elapsed.TotalSeconds:F1} s"));

        var acquire = new ConcurrentBag<double>();
        var commit = new ConcurrentBag<double>();
        var vector = Enumerable.Range(0, dimensions).Select(i => (float)i).ToArray();
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, nodes).Select(n => Task.Run(async () =>
        {
            var name = $"sim-{n:D3}";
            var silo = $"10.0.{n / 250}.{n % 250}:11111:1";
            while (true)
            {
                var started = Stopwatch.GetTimestamp();
                var lease = await store.AcquireAsync(job, name, NodeHost.ClusterId, CancellationToken.None, silo);
                acquire.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                if (lease is null)
                {
                    return;
                }

                await Task.Delay(workMs);
                var results = Enumerable.Range(0, lease.Count).Select(i => new ClusterResult($"item-{lease.First + i:D9}", lease.First + i, true, null, vector, "cpu")).ToList();
                started = Stopwatch.GetTimestamp();
                if (!await store.CommitAsync(lease, name, results, CancellationToken.None))
                {
                    throw new InvalidOperationException($"{name}: commit of shard {lease.Shard} refused");
                }

                commit.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            }
        })));
        var wall = clock.Elapsed;

        var progress = (await store.ProgressAsync(job))!;
        if (!progress.Finished || progress.Committed != items)
        {
            throw new InvalidOperationException($"the job did not finish whole: {progress}");
        }

        var status = new List<double>();
        for (var i = 0; i < 20; i++)
        {
            var started = Stopwatch.GetTimestamp();
            _ = await store.ProgressAsync(job);
            _ = await store.ActivityAsync(job);
            status.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }

        await using var size = database.CreateCommand(
            "SELECT pg_total_relation_size('inferpool_results'), pg_total_relation_size('inferpool_manifest'), pg_total_relation_size('inferpool_shards'), pg_database_size(current_database())");
        await using var reader = await size.ExecuteReaderAsync();
        await reader.ReadAsync();
        var perMillion = 1_000_000.0 / items / (1024 * 1024);
        var shards = commit.Count;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"""
            run: {wall.TotalSeconds:F1} s for {shards:N0} shards: {shards / wall.TotalSeconds:F0} commits/s ({items / wall.TotalSeconds:N0} items/s), {acquire.Count / wall.TotalSeconds:F0} lease calls/s
            lease call: median {Percentile(acquire, 0.5):F1} ms, p99 {Percentile(acquire, 0.99):F1} ms; commit ({shardSize} rows): median {Percentile(commit, 0.5):F1} ms, p99 {Percentile(commit, 0.99):F1} ms
            status (progress + activity) at the end: median {Percentile(status, 0.5):F1} ms, max {status.Max():F1} ms
            database per million items: results {reader.GetInt64(0) * perMillion:F0} MB, manifest {reader.GetInt64(1) * perMillion:F0} MB, shards {reader.GetInt64(2) * perMillion:F1} MB; whole database now {reader.GetInt64(3) / (1024.0 * 1024):F0} MB
            """));
    }

    private static async IAsyncEnumerable<ManifestItem> Manifest(long items)
    {
        for (long i = 0; i < items; i++)
        {
            yield return new ManifestItem(i, $"item-{i:D9}", null, null, null);
        }

        await Task.CompletedTask;
    }

    private static double Percentile(IEnumerable<double> values, double p)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];
    }
}
