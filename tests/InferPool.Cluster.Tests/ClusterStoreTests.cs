using InferPool.Onnx.Tensors;
using Npgsql;

namespace InferPool.Cluster.Tests;

/// <summary>Shard leases and epoch-checked commits against a real PostgreSQL: the exactly-once core of the cluster.</summary>
[Collection(PostgresTests.Name)]
public sealed class ClusterStoreTests(PostgresServer postgres)
{
    private async Task<(ClusterStore Store, NpgsqlDataSource Database)> NewStoreAsync()
    {
        Requirement.Needs(postgres.Unavailable);
        var database = NpgsqlDataSource.Create(postgres.NewDatabase());
        await ClusterSchema.EnsureAsync(database, CancellationToken.None);
        await ClusterSchema.EnsureAsync(database, CancellationToken.None); // idempotent
        return (new ClusterStore(database), database);
    }

    [SkippableFact]
    public async Task A_stale_lease_cannot_commit_and_every_item_is_committed_once()
    {
        var (store, database) = await NewStoreAsync();
        await using var _ = database;
        await store.CreateJobAsync(new ClusterJob("j", "/in", "resnet18", 1, 4, 10, 30, "running"), CancellationToken.None);

        var a = await store.AcquireAsync("j", "node-a", "inferpool", CancellationToken.None);
        Assert.Equal((0, 0L, 4, 1L), (a!.Shard, a.First, a.Count, a.Epoch));

        // node-a goes silent past its lease; node-b gets the same shard with the next epoch and commits it.
        await ExecuteAsync(database, "UPDATE inferpool_shards SET lease_expires = now() - interval '1 second' WHERE shard = 0");
        var b = await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None);
        Assert.Equal((0, 2L), (b!.Shard, b.Epoch));
        Assert.False(await store.RenewAsync(a, "node-a", CancellationToken.None));
        Assert.True(await store.CommitAsync(b, "node-b", Results(0, 4, "b"), CancellationToken.None));

        // node-a comes back and tries to commit: refused, nothing of it written.
        Assert.False(await store.CommitAsync(a, "node-a", Results(0, 4, "a"), CancellationToken.None));
        Assert.False(await store.CommitAsync(b, "node-b", Results(0, 4, "b"), CancellationToken.None)); // and never twice

        // The rest: shards 1 (4 items) and 2 (the last 2).
        var c = await store.AcquireAsync("j", "node-a", "inferpool", CancellationToken.None);
        var d = await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None);
        Assert.Null(await store.AcquireAsync("j", "node-c", "inferpool", CancellationToken.None));
        Assert.Equal((1, 2, 8L, 2), (c!.Shard, d!.Shard, d.First, d.Count));
        Assert.True(await store.CommitAsync(c, "node-a", Results(4, 4, "a"), CancellationToken.None));
        Assert.True(await store.CommitAsync(d, "node-b", Results(8, 2, "b"), CancellationToken.None));

        var progress = await store.ProgressAsync("j", CancellationToken.None);
        Assert.True(progress!.Finished);
        Assert.Equal(10, progress.Committed);
        Assert.Equal(10L, await ScalarAsync(database, "SELECT count(DISTINCT key) FROM inferpool_results"));
        Assert.Equal(0L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results WHERE shard = 0 AND (node <> 'node-b' OR epoch <> 2)"));
        Assert.Empty(await store.RunningJobsAsync(CancellationToken.None));
    }

    [SkippableFact]
    public async Task A_lease_held_by_a_node_Orleans_declared_dead_is_granted_again_at_once()
    {
        var (store, database) = await NewStoreAsync();
        await using var _ = database;
        await store.CreateJobAsync(new ClusterJob("j", "/in", "resnet18", 1, 5, 5, 600, "running"), CancellationToken.None);
        var first = await store.AcquireAsync("j", "node-a", "inferpool", CancellationToken.None);
        Assert.Null(await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None)); // leased for 10 minutes

        // Orleans' membership table marks node-a dead (status 6).
        await ExecuteAsync(database, """
            INSERT INTO OrleansMembershipVersionTable (DeploymentId) VALUES ('inferpool');
            INSERT INTO OrleansMembershipTable (DeploymentId, Address, Port, Generation, SiloName, HostName, Status, StartTime, IAmAliveTime)
            VALUES ('inferpool', '10.0.0.1', 11111, 1, 'node-a', 'h', 6, now(), now());
            """);

        var again = await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None);
        Assert.Equal((0, first!.Epoch + 1), (again!.Shard, again.Epoch));
    }

    [SkippableFact]
    public async Task A_node_restarted_under_its_name_keeps_its_leases_while_its_dead_predecessors_are_granted_again()
    {
        var (store, database) = await NewStoreAsync();
        await using var _ = database;
        await store.CreateJobAsync(new ClusterJob("j", "/in", "resnet18", 1, 1, 3, 600, "running"), CancellationToken.None);
        // node-a's first incarnation (generation 1) took shard 0, then died; Orleans marked it dead. node-a came back
        // on the same address and port (generation 2).
        var old = await store.AcquireAsync("j", "node-a", "inferpool", CancellationToken.None, silo: "10.0.0.1:11111:1");
        await ExecuteAsync(database, """
            INSERT INTO OrleansMembershipVersionTable (DeploymentId) VALUES ('inferpool');
            INSERT INTO OrleansMembershipTable (DeploymentId, Address, Port, Generation, SiloName, HostName, Status, StartTime, IAmAliveTime)
            VALUES ('inferpool', '10.0.0.1', 11111, 1, 'node-a', 'h', 6, now(), now()),
                   ('inferpool', '10.0.0.1', 11111, 2, 'node-a', 'h', 3, now(), now());
            """);

        // The restarted node takes its dead predecessor's shard over at once (the lease had ten minutes to run) ...
        var restarted = await store.AcquireAsync("j", "node-a", "inferpool", CancellationToken.None, silo: "10.0.0.1:11111:2");
        Assert.Equal((0, 0, old!.Epoch + 1), (old.Shard, restarted!.Shard, restarted.Epoch));

        // ... and keeps it: node-b gets the next shards, not the living node-a's, though a dead silo of that name exists.
        var next = await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None, silo: "10.0.0.2:11111:1");
        var last = await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None, silo: "10.0.0.2:11111:1");
        Assert.Equal((1, 2), (next!.Shard, last!.Shard));
        Assert.Null(await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None, silo: "10.0.0.2:11111:1"));
        Assert.True(await store.CommitAsync(restarted, "node-a", Results(0, 1, "a"), CancellationToken.None));
    }

    [SkippableFact]
    public async Task A_job_is_finished_only_when_every_item_of_its_manifest_is_accounted_for()
    {
        var (store, database) = await NewStoreAsync();
        await using var _ = database;
        var manifest = Enumerable.Range(0, 5).Select(i => new ManifestItem(i, $"k{i}", null, null, null)).ToAsyncEnumerable();
        Assert.Equal(5, await store.CreateJobAsync(new ClusterJob("j", "/in.jsonl", "resnet18", 1, 3, 0, 600, "running"), manifest, CancellationToken.None));
        Assert.Equal(["k3", "k4"], (await store.ManifestAsync("j", 3, 2, CancellationToken.None)).Select(m => m.Key));

        var a = await store.AcquireAsync("j", "node-a", "inferpool", CancellationToken.None);
        // Two results for three items, or one item twice: refused whole, nothing written.
        var missing = await Assert.ThrowsAsync<ShardFailedException>(() => store.CommitAsync(a!, "node-a", Results(0, 2, "a"), CancellationToken.None));
        Assert.Contains("results for 2 of its 3 items (item 2 has none)", missing.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ShardFailedException>(() => store.CommitAsync(a!, "node-a", [.. Results(0, 2, "a"), .. Results(1, 1, "a")], CancellationToken.None));
        Assert.Equal(0L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results"));

        Assert.True(await store.CommitAsync(a!, "node-a", Results(0, 3, "a"), CancellationToken.None));
        var progress = await store.ProgressAsync("j", CancellationToken.None);
        Assert.False(progress!.Finished);
        Assert.Equal((3L, "running"), (progress.Committed, progress.State));

        var b = await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None);
        Assert.True(await store.CommitAsync(b!, "node-b", [.. Results(3, 1, "b"), new ClusterResult("k4", 4, false, "bad", null, null)], CancellationToken.None));
        progress = await store.ProgressAsync("j", CancellationToken.None);
        Assert.True(progress!.Finished);
        Assert.Equal((5L, 1L, "done"), (progress.Committed, progress.Failed, progress.State));
    }

    [SkippableFact]
    public async Task A_failed_shard_fails_its_job_with_the_reason_and_no_more_shards_are_handed_out()
    {
        var (store, database) = await NewStoreAsync();
        await using var _ = database;
        await store.CreateJobAsync(new ClusterJob("j", "/in", "resnet18", 1, 2, 6, 600, "running"), CancellationToken.None);
        var a = await store.AcquireAsync("j", "node-a", "inferpool", CancellationToken.None);

        Assert.True(await store.FailShardAsync(a!, "node-a", "/in/x.png changed since the job was submitted", CancellationToken.None));

        var progress = await store.ProgressAsync("j", CancellationToken.None);
        Assert.Equal("failed", progress!.State);
        Assert.False(progress.Finished);
        Assert.Equal("shard 0 (items 0+2) failed on node node-a: /in/x.png changed since the job was submitted", progress.Error);
        Assert.Null(await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None));
        Assert.Empty(await store.RunningJobsAsync(CancellationToken.None));
    }

    [SkippableFact]
    public async Task A_shard_no_active_node_can_read_fails_its_job_naming_each_nodes_reason()
    {
        var (store, database) = await NewStoreAsync();
        await using var _ = database;
        await store.CreateJobAsync(new ClusterJob("j", "/in", "resnet18", 1, 2, 4, 600, "running"), CancellationToken.None);
        await ExecuteAsync(database, """
            INSERT INTO OrleansMembershipVersionTable (DeploymentId) VALUES ('inferpool');
            INSERT INTO OrleansMembershipTable (DeploymentId, Address, Port, Generation, SiloName, HostName, Status, StartTime, IAmAliveTime)
            VALUES ('inferpool', '10.0.0.1', 1, 1, 'node-a', 'h', 3, now(), now()), ('inferpool', '10.0.0.2', 1, 1, 'node-b', 'h', 3, now(), now());
            """);

        // node-a cannot read the input: the shard goes back for node-b, and the job runs on.
        var a = await store.AcquireAsync("j", "node-a", "inferpool", CancellationToken.None);
        Assert.False(await store.HandBackUnreadableAsync(a!, "node-a", "the input folder /in is empty here", "inferpool", 3, CancellationToken.None));
        var b = await store.AcquireAsync("j", "node-b", "inferpool", CancellationToken.None);
        Assert.Equal((0, "running"), (b!.Shard, (await store.ProgressAsync("j", CancellationToken.None))!.State));

        // node-b cannot either: both active nodes refused, so the job fails rather than wait for ever.
        Assert.True(await store.HandBackUnreadableAsync(b, "node-b", "the input folder /in is not here", "inferpool", 3, CancellationToken.None));
        var progress = await store.ProgressAsync("j", CancellationToken.None);
        Assert.Equal("failed", progress!.State);
        Assert.Equal("shard 0 (items 0+2): no node could read its input (node-a: the input folder /in is empty here; node-b: the input folder /in is not here)", progress.Error);
    }

    [SkippableFact]
    public async Task The_password_comes_from_the_variable_the_connection_string_names_never_from_the_command_line()
    {
        Requirement.Needs(postgres.Unavailable);
        var variable = $"INFERPOOL_TEST_PASSWORD_{Environment.ProcessId}";
        Environment.SetEnvironmentVariable(variable, "s3cret;with=odd chars");
        try
        {
            var resolved = ClusterConnection.Resolve($"Host=db;Username=u;PasswordEnv={variable};Database=d");
            Assert.Equal("s3cret;with=odd chars", new NpgsqlConnectionStringBuilder(resolved).Password);
            Assert.Equal("Host=db;Username=u;Database=d", ClusterConnection.Resolve("Host=db;Username=u;Database=d"));

            // The real server (trust authentication here) is reached through the resolved string.
            var store = await ClusterStore.OpenAsync($"{postgres.NewDatabase()};PasswordEnv={variable}");
            await using (store.Database)
            {
                Assert.Empty(await store.JobIdsAsync());
            }
        }
        finally
        {
            Environment.SetEnvironmentVariable(variable, null);
        }

        var missing = Assert.Throws<ArgumentException>(() => ClusterConnection.Resolve($"Host=db;PasswordEnv={variable}"));
        Assert.Contains($"the environment variable {variable} (PasswordEnv), which is not set", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Outputs_of_every_element_type_and_shape_are_stored_as_they_came_out()
    {
        TensorData[] outputs =
        [
            TensorData.Create(new[] { 1.5f, -2f, 3.25f, 0f, 5f, 6f }, 2, 3),
            TensorData.Create(new[] { 1e300, -1e-300 }, 2),
            TensorData.Create(new[] { long.MaxValue, -7L }, 2),
            TensorData.Create(new[] { 42 }, 1),
            TensorData.Create(new sbyte[] { -128, 127 }, 2),
            TensorData.Create(new byte[] { 0, 255, 7 }, 3),
            TensorData.Create(new[] { true, false }, 2),
            TensorData.Create(new[] { (Microsoft.ML.OnnxRuntime.Float16)1.5f }, 1),
            TensorData.Create(Array.Empty<float>(), 0),
        ];

        var decoded = TensorCodec.Decode(TensorCodec.Encode(outputs));

        Assert.Equal(outputs.Length, decoded.Count);
        for (var i = 0; i < outputs.Length; i++)
        {
            Assert.Equal(outputs[i].ElementType, decoded[i].ElementType);
            Assert.Equal(outputs[i].Shape, decoded[i].Shape);
            Assert.Equal(outputs[i].Values.GetType(), decoded[i].Values.GetType());
            Assert.Equal(outputs[i].Values.Cast<object>(), decoded[i].Values.Cast<object>());
        }
    }

    [SkippableFact]
    public async Task A_cancelled_job_hands_out_no_more_shards()
    {
        var (store, database) = await NewStoreAsync();
        await using var _ = database;
        await store.CreateJobAsync(new ClusterJob("j", "/in", "resnet18", 1, 1, 3, 30, "running"), CancellationToken.None);
        Assert.True(await store.CancelAsync("j", CancellationToken.None));
        Assert.Null(await store.AcquireAsync("j", "node-a", "inferpool", CancellationToken.None));
        Assert.Equal("cancelled", (await store.ProgressAsync("j", CancellationToken.None))!.State);
    }

    /// <summary>
    /// Idle nodes wake when a job is submitted or a shard is handed back, and a follower when its own job's progress
    /// changes, from PostgreSQL's notifications rather than at their next poll. Each wait below is bounded far beyond
    /// any poll, and a follower of one job is shown not to wake for another's commit (notifications arrive in order).
    /// </summary>
    [SkippableFact]
    public async Task Submitting_handing_back_committing_and_cancelling_signal_the_listeners()
    {
        var (store, database) = await NewStoreAsync();
        await using var _ = database;
        await using var work = ClusterSignals.ForWork(database);
        await using var progress = ClusterSignals.ForProgress(database);
        var bound = TimeSpan.FromSeconds(30);

        // The first look starts listening; the pulse that says "listening now, look again" comes first.
        Assert.True(await ClusterSignals.WaitAsync(work.Next(), bound, CancellationToken.None));
        Assert.True(await ClusterSignals.WaitAsync(progress.Next(), bound, CancellationToken.None));

        var submitted = work.Next();
        await store.CreateJobAsync(new ClusterJob("a", "/in", "resnet18", 1, 2, 4, 30, "running"), CancellationToken.None);
        await store.CreateJobAsync(new ClusterJob("b", "/in", "resnet18", 1, 2, 4, 30, "running"), CancellationToken.None);
        Assert.True(await ClusterSignals.WaitAsync(submitted, bound, CancellationToken.None));

        var a = await store.AcquireAsync("a", "node-a", "inferpool", CancellationToken.None);
        var handedBack = work.Next();
        Assert.True(await store.ReleaseAsync(a!, "node-a", CancellationToken.None));
        Assert.True(await ClusterSignals.WaitAsync(handedBack, bound, CancellationToken.None));

        var forA = progress.Next("a");
        var forB = progress.Next("b");
        var b = await store.AcquireAsync("b", "node-b", "inferpool", CancellationToken.None);
        Assert.True(await store.CommitAsync(b!, "node-b", Results(0, 2, "b"), CancellationToken.None));
        Assert.True(await ClusterSignals.WaitAsync(forB, bound, CancellationToken.None));
        Assert.False(forA.IsCompleted);

        Assert.True(await store.CancelAsync("a", CancellationToken.None));
        Assert.True(await ClusterSignals.WaitAsync(forA, bound, CancellationToken.None));

        // Without a signal, the wait ends at its timeout.
        Assert.False(await ClusterSignals.WaitAsync(progress.Next("a"), TimeSpan.FromMilliseconds(1), CancellationToken.None));
    }

    /// <summary>Every query Orleans reads from OrleansQuery parses and plans (EXPLAIN with typed stand-ins for its parameters).</summary>
    [SkippableFact]
    public async Task Every_Orleans_query_in_the_migration_is_valid_sql()
    {
        var (_, database) = await NewStoreAsync();
        await using var _ = database;
        var queries = new List<(string Key, string Text)>();
        await using (var read = database.CreateCommand("SELECT QueryKey, QueryText FROM OrleansQuery ORDER BY QueryKey"))
        await using (var reader = await read.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                queries.Add((reader.GetString(0), reader.GetString(1)));
            }
        }

        Assert.Equal(9, queries.Count);
        foreach (var (key, text) in queries)
        {
            foreach (var statement in text.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var sql = System.Text.RegularExpressions.Regex.Replace(statement, "@(\\w+)", m => m.Groups[1].Value switch
                {
                    "Port" or "Generation" or "Status" or "ProxyPort" or "Version" => "1",
                    "StartTime" or "IAmAliveTime" => "now()",
                    _ => "'x'",
                });
                await using var explain = database.CreateCommand("EXPLAIN " + sql);
                var ex = await Record.ExceptionAsync(() => explain.ExecuteNonQueryAsync());
                Assert.True(ex is null, $"{key}: {ex?.Message}\n{sql}");
            }
        }
    }

    private static List<ClusterResult> Results(long first, int count, string by) =>
        [.. Enumerable.Range(0, count).Select(i => new ClusterResult($"k{first + i}", first + i, true, null, [first + i, by[0]], "cpu"))];

    private static async Task ExecuteAsync(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        await command.ExecuteNonQueryAsync();
    }

    private static async Task<long> ScalarAsync(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
