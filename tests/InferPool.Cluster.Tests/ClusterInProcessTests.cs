using System.Collections.Concurrent;
using System.Globalization;
using InferPool.Devices;
using InferPool.Onnx.Tests;
using Npgsql;
using Orleans.TestingHost;

namespace InferPool.Cluster.Tests;

/// <summary>
/// Orleans' in-process test cluster with three silos, each an InferPool node on a tiny real ONNX model (y = 2x + 1),
/// sharing a throwaway PostgreSQL for jobs, leases and results; one silo is killed mid-job.
/// </summary>
[Collection(PostgresTests.Name)]
public sealed class ClusterInProcessTests(PostgresServer postgres) : TempFolderTest
{
    private const int Items = 400;

    [SkippableFact]
    public async Task Three_silos_one_killed_mid_job_every_key_committed_once_with_the_right_value()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        var model = TinyModels.Affine(Dir, symbolicBatch: true);
        Write("in.jsonl", string.Join('\n', Enumerable.Range(0, Items).Select(i => $$"""{"key": "k{{i}}", "input": [{{i}}, 1, 2, 3]}""")));
        await using var database = NpgsqlDataSource.Create(connection);
        await ClusterSchema.EnsureAsync(database, CancellationToken.None);
        var store = new ClusterStore(database);

        var cluster = await DeployAsync(3, connection);
        try
        {
            await store.CreateJobAsync(new ClusterJob("inproc", Path.Combine(Dir, "in.jsonl"), model, 4, 10, Items, 2, "running"), CancellationToken.None);

            // Kill a secondary silo (the primary holds the test cluster's membership) once the job is under way.
            await WaitForAsync(async () => (await store.ProgressAsync("inproc", CancellationToken.None))!.Done >= 3);
            var victim = cluster.SecondarySilos[0];
            await cluster.KillSiloAsync(victim);

            await WaitForAsync(async () => (await store.ProgressAsync("inproc", CancellationToken.None))!.Finished);

            await using var command = database.CreateCommand("SELECT key, item_index, vector, status FROM inferpool_results WHERE job_id = 'inproc'");
            await using var reader = await command.ExecuteReaderAsync();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            while (await reader.ReadAsync())
            {
                Assert.True(seen.Add(reader.GetString(0)), $"{reader.GetString(0)} committed twice");
                Assert.Equal("ok", reader.GetString(3));
                var i = reader.GetInt64(1);
                Assert.Equal($"k{i}", reader.GetString(0));
                Assert.Equal([(2 * i) + 1, 3, 5, 7], reader.GetFieldValue<float[]>(2));
            }

            Assert.Equal(Items, seen.Count);

            // An item a node cannot use fails alone, with the reason and the node's name, and the job still ends.
            Write("bad.jsonl", """
                {"key": "good", "input": [1, 1, 1, 1]}
                {"key": "short", "input": [1, 2]}
                """);
            await store.CreateJobAsync(new ClusterJob("bad", Path.Combine(Dir, "bad.jsonl"), model, 4, 10, 2, 2, "running"), CancellationToken.None);
            await WaitForAsync(async () => (await store.ProgressAsync("bad", CancellationToken.None))!.Finished);
            await using var bad = database.CreateCommand("SELECT error FROM inferpool_results WHERE job_id = 'bad' AND key = 'short' AND status = 'failed'");
            var error = (string)(await bad.ExecuteScalarAsync())!;
            Assert.Contains("Input x has shape [2]; model input x Float [N,4] fixes dimension 1 at 4.", error, StringComparison.Ordinal);
            Assert.Matches(@"\(on node [^)]+\)$", error);
            Assert.Equal(1, (await store.ProgressAsync("bad", CancellationToken.None))!.Failed);

            // Results the database refuses (here a key in two shards of a job made without a manifest, so the second
            // commit breaks the primary key) fail the job with PostgreSQL's reason: not retried for ever, not
            // called "not reachable".
            Write("twice.jsonl", """
                {"key": "same", "input": [1, 1, 1, 1]}
                {"key": "same", "input": [2, 2, 2, 2]}
                """);
            await store.CreateJobAsync(new ClusterJob("twice", Path.Combine(Dir, "twice.jsonl"), model, 1, 1, 2, 2, "running"), CancellationToken.None);
            await WaitForAsync(async () => (await store.ProgressAsync("twice", CancellationToken.None))!.State == "failed");
            var twice = (await store.ProgressAsync("twice", CancellationToken.None))!;
            Assert.Contains("the database refused its results: 23505", twice.Error, StringComparison.Ordinal);
            Assert.Equal(1, twice.Committed);
        }
        finally
        {
            await cluster.StopAllSilosAsync();
            await cluster.DisposeAsync();
        }
    }

    /// <summary>
    /// A warm node keeps its replicas for the next job of the same model file, and builds new ones when the file at
    /// that path changed in between: the third job's results are the new model's, not the kept replicas'.
    /// </summary>
    [SkippableFact]
    public async Task A_node_keeps_its_replicas_for_the_next_job_of_the_same_model_but_not_when_the_file_changed()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        var models = Directory.CreateDirectory(Path.Combine(Dir, "models")).FullName;
        var model = TinyModels.Affine(models, symbolicBatch: true);
        Write("in.jsonl", string.Join('\n', Enumerable.Range(0, 6).Select(i => $$"""{"key": "k{{i}}", "input": [{{i}}, 1, 2, 3]}""")));
        await using var database = NpgsqlDataSource.Create(connection);
        await ClusterSchema.EnsureAsync(database, CancellationToken.None);
        var store = new ClusterStore(database);
        var cluster = await DeployAsync(1, connection);
        try
        {
            async Task<Dictionary<long, float[]>> RunAsync(string id)
            {
                await store.CreateJobAsync(new ClusterJob(id, Path.Combine(Dir, "in.jsonl"), model, 4, 3, 6, 10, "running"), CancellationToken.None);
                await WaitForAsync(async () => (await store.ProgressAsync(id, CancellationToken.None))!.Finished);
                var rows = new Dictionary<long, float[]>();
                await foreach (var row in ReadVectorsAsync(database, id))
                {
                    rows.Add(row.Index, row.Vector);
                }

                return rows;
            }

            float[] Expected(long i, float scale) => [(scale * i) + 1, scale + 1, (2 * scale) + 1, (3 * scale) + 1];

            var first = await RunAsync("first");
            var second = await RunAsync("second");
            Assert.All(Enumerable.Range(0, 6), i => Assert.Equal(Expected(i, 2), first[i]));
            Assert.All(Enumerable.Range(0, 6), i => Assert.Equal(Expected(i, 2), second[i]));

            // The same path, the same size, another model (and a later time).
            TinyModels.Affine(models, symbolicBatch: true, scale: 3);
            File.SetLastWriteTimeUtc(model, DateTime.UtcNow.AddMinutes(1));
            var third = await RunAsync("third");
            Assert.All(Enumerable.Range(0, 6), i => Assert.Equal(Expected(i, 3), third[i]));
        }
        finally
        {
            await cluster.StopAllSilosAsync();
            await cluster.DisposeAsync();
        }
    }

    private static async IAsyncEnumerable<(long Index, float[] Vector)> ReadVectorsAsync(NpgsqlDataSource database, string job)
    {
        await using var command = database.CreateCommand("SELECT item_index, vector FROM inferpool_results WHERE job_id = @job AND status = 'ok'");
        command.Parameters.AddWithValue("job", job);
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            yield return (reader.GetInt64(0), reader.GetFieldValue<float[]>(1));
        }
    }

    [SkippableFact]
    public async Task A_worker_command_runs_on_every_silo_and_a_crashing_item_fails_alone()
    {
        Requirement.Needs(postgres.Unavailable);
        var (rows, refusals) = await RunWorkerJobAsync(allowOn: "*");

        Assert.Equal(31, rows.Count);
        for (var i = 0; i < 30; i++)
        {
            var row = rows[$"f{i:D2}.bin"];
            Assert.Equal("ok", row.Status);
            Assert.Equal([i + 1, i + 1], row.Vector!);
        }

        var crashed = rows["g-crash.bin"];
        Assert.Equal("failed", crashed.Status);
        Assert.Contains("exit code 3", crashed.Error, StringComparison.Ordinal);
        Assert.Contains("(on node ", crashed.Error, StringComparison.Ordinal);
        Assert.Empty(refusals);
    }

    [SkippableFact]
    public async Task A_node_not_allowed_the_worker_command_refuses_the_job_while_an_allowed_node_runs_it()
    {
        Requirement.Needs(postgres.Unavailable);
        var (rows, refusals) = await RunWorkerJobAsync(allowOn: Silo.PrimaryName);

        Assert.Equal(31, rows.Count);
        Assert.All(rows.Values, r => Assert.Equal(Silo.PrimaryName, r.Node));
        var refusal = Assert.Single(refusals);
        Assert.NotEqual(Silo.PrimaryName, refusal.Node);
        Assert.Contains("is not allowed on this node", refusal.Reason, StringComparison.Ordinal);
    }

    /// <summary>A worker job of 31 files (one crashes its worker) on two silos, the worker allowed on <paramref name="allowOn"/> ("*" for both).</summary>
    private async Task<(Dictionary<string, (string Status, string? Error, float[]? Vector, string Node)> Rows, IReadOnlyList<(string Node, string Reason)> Refusals)> RunWorkerJobAsync(string allowOn)
    {
        var connection = postgres.NewDatabase();
        for (var i = 0; i < 30; i++)
        {
            Write($"in/f{i:D2}.bin", [(byte)(i + 1), .. new byte[i]]);
        }

        Write("in/g-crash.bin", [1]);
        var worker = $"python3 {Path.Combine(TestFiles.Directory, "workers", "file_worker.py")}";
        await using var database = NpgsqlDataSource.Create(connection);
        await ClusterSchema.EnsureAsync(database, CancellationToken.None);
        var store = new ClusterStore(database);
        var cluster = await DeployAsync(2, connection, (Silo.AllowOnKey, allowOn), (Silo.AllowPatternKey, $"python3 {Path.Combine(TestFiles.Directory, "workers")}/*.py"));
        try
        {
            await store.CreateJobAsync(new ClusterJob("workers", Path.Combine(Dir, "in"), "worker", 3, 4, 31, 10, "running", worker), CancellationToken.None);

            await WaitForAsync(async () => (await store.ProgressAsync("workers", CancellationToken.None))!.Finished);
            if (allowOn != "*")
            {
                // The refusing node records its refusal on its first look at the job, which may come after the other node finished it.
                await WaitForAsync(async () => (await store.RefusalsAsync("workers")).Count > 0);
            }

            await using var command = database.CreateCommand("SELECT key, status, error, vector, node FROM inferpool_results WHERE job_id = 'workers'");
            await using var reader = await command.ExecuteReaderAsync();
            var rows = new Dictionary<string, (string Status, string? Error, float[]? Vector, string Node)>(StringComparer.Ordinal);
            while (await reader.ReadAsync())
            {
                rows.Add(reader.GetString(0), (reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2), reader.IsDBNull(3) ? null : reader.GetFieldValue<float[]>(3), reader.GetString(4)));
            }

            return (rows, await store.RefusalsAsync("workers"));
        }
        finally
        {
            await cluster.StopAllSilosAsync();
            await cluster.DisposeAsync();
        }
    }

    /// <summary>An in-process test cluster of <paramref name="silos"/> InferPool nodes on <paramref name="connection"/>, deployed; stop and dispose it when done.</summary>
    private static async Task<TestCluster> DeployAsync(short silos, string connection, params (string Key, string Value)[] properties)
    {
        var builder = new TestClusterBuilder(silos);
        builder.Properties[Silo.ConnectionKey] = connection;
        foreach (var (key, value) in properties)
        {
            builder.Properties[key] = value;
        }

        builder.AddSiloBuilderConfigurator<Silo>();
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return cluster;
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the cluster made no progress within 2 minutes");
            await Task.Delay(50); // polling the database the silos write: there is no event to wait on
        }
    }

    /// <summary>Makes each test silo an InferPool node named after the silo, on one CPU replica.</summary>
    public sealed class Silo : ISiloConfigurator
    {
        public const string ConnectionKey = "InferPoolTestConnection";
        public const string AllowOnKey = "InferPoolTestAllowOn";
        public const string AllowPatternKey = "InferPoolTestAllowPattern";

        /// <summary>The first silo's node name.</summary>
        public const string PrimaryName = "node-1";

        /// <summary>Silos configured so far per test cluster (its database): each gets its own node name, node-1 first.</summary>
        private static readonly ConcurrentDictionary<string, int> Configured = new(StringComparer.Ordinal);

        public void Configure(ISiloBuilder siloBuilder)
        {
            ArgumentNullException.ThrowIfNull(siloBuilder);
            var name = $"node-{Configured.AddOrUpdate(siloBuilder.Configuration[ConnectionKey]!, 1, (_, n) => n + 1)}";
            var allowOn = siloBuilder.Configuration[AllowOnKey];
            string[] allowed = allowOn == "*" || allowOn == name ? [siloBuilder.Configuration[AllowPatternKey]!] : [];
            siloBuilder.AddInferPoolNode(
                siloBuilder.Configuration[ConnectionKey]!,
                new ClusterNodeOptions(name, ReplicaPlan.Cpu(1), 1, TimeSpan.FromMilliseconds(100)) { AllowedWorkers = allowed });
        }
    }
}
