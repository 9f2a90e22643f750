using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Npgsql;

namespace InferPool.Cli.Tests;

/// <summary>
/// The cluster as users run it: real <c>inferpool node</c> processes on loopback sharing a throwaway PostgreSQL,
/// a job submitted with <c>run --cluster</c>, one node killed with SIGKILL (or frozen with SIGSTOP past its lease)
/// in the middle; every key must be committed exactly once and equal a single-machine run.
/// </summary>
[Collection(PostgresTests.Name)]
public sealed class ClusterProcessTests(PostgresServer postgres) : TempFolderTest
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(3);

    [SkippableFact]
    public async Task A_node_killed_mid_job_loses_nothing_and_duplicates_nothing()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        CopySamples(copies: 6);
        var reference = await ReferenceAsync();
        var nodes = Enumerable.Range(1, 3).Select(i => Node.Start(Dir, connection, $"node-{i}")).ToList();
        try
        {
            await using var database = NpgsqlDataSource.Create(connection);
            await InferPool.Cluster.NodeHost.PrepareDatabaseAsync(connection); // as the nodes do, so the test can poll at once
            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM OrleansMembershipTable WHERE Status = 3") == 3, "three active nodes", nodes);
            var submit = await Cli.RunAsync(Dir, "run", "in", "--cluster", connection, "--shard-size", "5", "--lease", "4", "--job", "kill", "--detach");
            Assert.True(submit.ExitCode == 0, submit.Out + submit.Err);

            // Once work is under way, kill a node that holds a lease right now. It is frozen first and its lease checked
            // again, so it cannot commit that shard between the check and the kill: the kill always strands a lease.
            string? victim = null;
            string? stranded = null;
            await WaitForAsync(async () =>
            {
                if (await ScalarAsync(database, "SELECT count(*) FROM inferpool_shards WHERE state = 'done'") < 2
                    || await TextAsync(database, "SELECT owner FROM inferpool_shards WHERE state = 'leased' ORDER BY shard LIMIT 1") is not { } owner)
                {
                    return false;
                }

                var node = nodes.Single(n => n.Name == owner);
                node.Signal("-STOP");
                stranded = await TextAsync(database, $"SELECT min(shard)::text FROM inferpool_shards WHERE job_id = 'kill' AND state = 'leased' AND owner = '{owner}'");
                if (stranded is null)
                {
                    node.Signal("-CONT");
                    return false;
                }

                victim = owner;
                return true;
            }, "a node frozen while it holds a lease, after two commits", nodes);
            var killed = nodes.Single(n => n.Name == victim);
            killed.Signal("-KILL");

            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM inferpool_shards WHERE state <> 'done'") == 0, "every shard committed", nodes);

            var rows = await ReadResultsAsync(database, "kill");
            Assert.Equal(reference.Count, rows.Count);
            foreach (var (key, expected) in reference)
            {
                Assert.True(rows.TryGetValue(key, out var actual), $"{key} was not committed");
                Assert.Equal(expected.Length, actual!.Length);
                Assert.All(expected.Zip(actual), p => Assert.Equal(p.First, p.Second, 1e-5f));
            }

            Assert.Equal(0L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results r JOIN inferpool_shards s USING (job_id, shard) WHERE r.epoch <> s.epoch"));

            // The killed node's shard was taken over: leased again (a later epoch) and committed by another node.
            Assert.True(await ScalarAsync(database, $"SELECT epoch FROM inferpool_shards WHERE job_id = 'kill' AND shard = {stranded}") > 1, $"shard {stranded} was not leased again after its owner was killed");
            Assert.NotEqual(victim, await TextAsync(database, $"SELECT owner FROM inferpool_shards WHERE job_id = 'kill' AND shard = {stranded}"));
            var status = await Cli.RunAsync(Dir, "status", "kill", "--cluster", connection);
            Assert.Contains($"kill: done, 24/24 shards committed (0 leased), {reference.Count}/{reference.Count} items, 0 failed", status.Out, StringComparison.Ordinal);
        }
        finally
        {
            nodes.ForEach(n => n.Dispose());
        }
    }

    [SkippableFact]
    public async Task Cancel_stops_a_submitted_job_and_says_when_there_is_nothing_to_cancel()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        CopySamples(copies: 1);
        var submit = await Cli.RunAsync(Dir, "run", "in", "--cluster", connection, "--shard-size", "5", "--job", "stopme", "--detach");
        Assert.True(submit.ExitCode == 0, submit.Out + submit.Err);

        var cancel = await Cli.RunAsync(Dir, "cancel", "stopme", "--cluster", connection);
        var again = await Cli.RunAsync(Dir, "cancel", "stopme", "--cluster", connection);
        var unknown = await Cli.RunAsync(Dir, "cancel", "no-such-job", "--cluster", connection);

        Assert.True(cancel.ExitCode == 0, cancel.Out + cancel.Err);
        Assert.Contains("Cancelled stopme.", cancel.Out, StringComparison.Ordinal);
        Assert.Equal(2, again.ExitCode);
        Assert.Contains("stopme is not running (unknown, finished or already cancelled).", again.Out, StringComparison.Ordinal);
        Assert.Equal(2, unknown.ExitCode);
        await using var database = NpgsqlDataSource.Create(connection);
        Assert.Equal("cancelled", await TextAsync(database, "SELECT state FROM inferpool_jobs WHERE id = 'stopme'"));
        Assert.Equal(0L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_shards WHERE job_id = 'stopme' AND state <> 'pending'"));
    }

    [SkippableFact]
    public async Task A_node_frozen_past_its_lease_cannot_commit_its_stale_shard()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        CopySamples(copies: 3);
        var nodes = Enumerable.Range(1, 2).Select(i => Node.Start(Dir, connection, $"node-{i}")).ToList();
        Node? zombie = null;
        try
        {
            await using var database = NpgsqlDataSource.Create(connection);
            await InferPool.Cluster.NodeHost.PrepareDatabaseAsync(connection); // as the nodes do, so the test can poll at once
            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM OrleansMembershipTable WHERE Status = 3") == 2, "two active nodes", nodes);
            var submit = await Cli.RunAsync(Dir, "run", "in", "--cluster", connection, "--shard-size", "15", "--lease", "3", "--job", "zombie", "--detach");
            Assert.True(submit.ExitCode == 0, submit.Out + submit.Err);

            // Freeze a node while it holds a lease it has not committed.
            var shard = -1;
            long epoch = 0;
            await WaitForAsync(async () =>
            {
                if (await LeasedShardAsync(database) is not var (owner, leased, leasedEpoch))
                {
                    return false;
                }

                var candidate = nodes.Single(n => n.Name == owner);
                (shard, epoch) = (leased, leasedEpoch);
                candidate.Signal("-STOP");
                var stillLeased = await ScalarAsync(database, $"SELECT count(*) FROM inferpool_shards WHERE shard = {shard} AND state = 'leased' AND epoch = {epoch}") == 1;
                if (!stillLeased)
                {
                    candidate.Signal("-CONT"); // it committed just before: try again with the next shard
                    return false;
                }

                zombie = candidate;
                return true;
            }, "a node frozen while holding a lease", nodes);

            // The other node takes the shard over after the lease runs out, and the job completes without the zombie.
            await WaitForAsync(async () => await ScalarAsync(database, $"SELECT count(*) FROM inferpool_shards WHERE shard = {shard} AND state = 'done' AND epoch > {epoch}") == 1, "the frozen node's shard redone", nodes);
            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM inferpool_shards WHERE state <> 'done'") == 0, "every shard committed", nodes);

            // Resumed, the zombie finds its lease gone (or itself declared dead) and commits nothing.
            zombie!.Signal("-CONT");
            await WaitForAsync(
                () => Task.FromResult(zombie.HasExited || zombie.Log.Any(l => l.Contains($"shard {shard} of zombie", StringComparison.Ordinal) && (l.Contains("lost the lease", StringComparison.Ordinal) || l.Contains("refused", StringComparison.Ordinal)))),
                "the zombie giving up its stale shard",
                nodes);
            Assert.Equal(60L, await ScalarAsync(database, "SELECT count(DISTINCT key) FROM inferpool_results WHERE job_id = 'zombie'"));
            Assert.Equal(60L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results WHERE job_id = 'zombie'"));
            Assert.Equal(0L, await ScalarAsync(database, $"SELECT count(*) FROM inferpool_results WHERE job_id = 'zombie' AND shard = {shard} AND epoch = {epoch}"));
        }
        finally
        {
            nodes.ForEach(n => n.Dispose());
        }
    }

    [SkippableFact]
    public async Task A_node_sent_SIGTERM_mid_shard_commits_it_then_leaves_with_143()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        CopySamples(copies: 3);
        var nodes = Enumerable.Range(1, 2).Select(i => Node.Start(Dir, connection, $"node-{i}")).ToList();
        try
        {
            await using var database = NpgsqlDataSource.Create(connection);
            await InferPool.Cluster.NodeHost.PrepareDatabaseAsync(connection);
            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM OrleansMembershipTable WHERE Status = 3") == 2, "two active nodes", nodes);
            var submit = await Cli.RunAsync(Dir, "run", "in", "--cluster", connection, "--shard-size", "20", "--lease", "30", "--job", "drain", "--detach");
            Assert.True(submit.ExitCode == 0, submit.Out + submit.Err);

            (string Owner, int Shard, long Epoch)? held = null;
            await WaitForAsync(async () => (held = await LeasedShardAsync(database)) is not null, "a leased shard", nodes);
            var (owner, shard, epoch) = held!.Value;
            var leaving = nodes.Single(n => n.Name == owner);
            leaving.Signal("-TERM");

            Assert.Equal(143, await leaving.ExitCodeAsync(Bound));
            Assert.Contains(leaving.Log, l => l.Contains("Stopping (SIGTERM)", StringComparison.Ordinal));
            // The shard it held was finished and committed by it under the same lease: not abandoned to run out.
            Assert.True(1L == await ScalarAsync(database, $"SELECT count(*) FROM inferpool_shards WHERE job_id = 'drain' AND shard = {shard} AND state = 'done' AND epoch = {epoch}"), string.Join("\n", leaving.Log));
            Assert.Equal(20L, await ScalarAsync(database, $"SELECT count(*) FROM inferpool_results WHERE job_id = 'drain' AND shard = {shard} AND node = '{owner}'"));

            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM inferpool_shards WHERE job_id = 'drain' AND state <> 'done'") == 0, "every shard committed by the other node", nodes);
            Assert.Equal(60L, await ScalarAsync(database, "SELECT count(DISTINCT key) FROM inferpool_results WHERE job_id = 'drain'"));
            Assert.Equal(60L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results WHERE job_id = 'drain'"));
        }
        finally
        {
            nodes.ForEach(n => n.Dispose());
        }
    }

    [SkippableFact]
    public async Task A_node_without_allow_worker_refuses_a_worker_job_that_an_allowing_node_runs()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        for (var i = 0; i < 12; i++)
        {
            Write($"in/f{i:D2}.bin", [(byte)(i + 1)]);
        }

        var workers = Path.Combine(Cli.ToolDirectory, "workers");
        var nodes = new List<Node>
        {
            Node.Start(Dir, connection, "strict"),
            Node.Start(Dir, connection, "open", "--allow-worker", $"python3 {workers}/*.py"),
        };
        try
        {
            await using var database = NpgsqlDataSource.Create(connection);
            await InferPool.Cluster.NodeHost.PrepareDatabaseAsync(connection);
            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM OrleansMembershipTable WHERE Status = 3") == 2, "two active nodes", nodes);
            var run = await Cli.RunAsync(Dir, "run", "in", "--cluster", connection, "--worker", $"python3 {workers}/file_worker.py", "--shard-size", "3", "--job", "trust", "-q");

            Assert.True(run.ExitCode == 0, run.Out + run.Err);
            Assert.Equal(12L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results WHERE job_id = 'trust' AND node = 'open' AND status = 'ok'"));
            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM inferpool_refusals WHERE job_id = 'trust' AND node = 'strict'") == 1, "the strict node's refusal", nodes);
            var status = await Cli.RunAsync(Dir, "status", "trust", "--cluster", connection);
            Assert.Contains("refused by strict: worker command 'python3", status.Out, StringComparison.Ordinal);
            Assert.Contains("is not allowed on this node", status.Out, StringComparison.Ordinal);

            // A worker's JSON outputs are stored as they are and exported as a local run writes them.
            var json = await Cli.RunAsync(Dir, "run", "in", "--cluster", connection, "--worker", $"python3 {workers}/file_worker.py", "--worker-output", "json", "--shard-size", "5", "--job", "json", "-q");
            Assert.True(json.ExitCode == 0, json.Out + json.Err);
            var export = await Cli.RunAsync(Dir, "export", "json", "--cluster", connection, "-o", "exported", "--format", "jsonl");
            Assert.True(export.ExitCode == 0, export.Out + export.Err);
            var local = await Cli.RunAsync(Dir, "run", "in", "--worker", $"python3 {workers}/file_worker.py", "--worker-output", "json", "-o", "local", "--format", "jsonl", "-q");
            Assert.True(local.ExitCode == 0, local.Err);
            var exportedRows = ReadJsonlOutputs(Path.Combine(Dir, "exported"));
            Assert.Equal(12, exportedRows.Count);
            Assert.Equal(ReadJsonlOutputs(Path.Combine(Dir, "local")), exportedRows);
        }
        finally
        {
            nodes.ForEach(n => n.Dispose());
        }
    }

    [SkippableFact]
    public async Task A_changed_or_emptied_input_fails_the_job_loudly_instead_of_reporting_success()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        var images = Directory.GetFiles(Cli.SampleImages, "*.png").Order(StringComparer.Ordinal).Take(4).ToList();
        foreach (var folder in new[] { "changed", "emptied" })
        {
            images.ForEach(i => File.Copy(i, Path.Combine(Directory.CreateDirectory(Path.Combine(Dir, folder)).FullName, Path.GetFileName(i))));
        }

        // Both jobs are submitted while no node runs; then their inputs change under them.
        var changed = await Cli.RunAsync(Dir, "run", "changed", "--cluster", connection, "--shard-size", "2", "--job", "changed", "--detach");
        Assert.True(changed.ExitCode == 0, changed.Out + changed.Err);
        using var submitter = Cli.Start(Dir, "run", "emptied", "--cluster", connection, "--shard-size", "2", "--job", "emptied");
        var output = submitter.StandardOutput.ReadToEndAsync();
        var errors = submitter.StandardError.ReadToEndAsync();
        await using var database = NpgsqlDataSource.Create(connection);
        await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM inferpool_jobs WHERE id = 'emptied'") == 1, "the second job submitted", []);
        var victim = Path.Combine(Dir, "changed", Path.GetFileName(images[3]));
        await File.AppendAllTextAsync(victim, "appended after the job was submitted");
        foreach (var file in Directory.GetFiles(Path.Combine(Dir, "emptied")))
        {
            File.Delete(file); // the folder stays, empty: as an unmounted share looks
        }

        using var node = Node.Start(Dir, connection, "node-1");
        // The emptied job's submitter does not report success: it exits 2 with the reason.
        await submitter.WaitForExitAsync().WaitAsync(Bound);
        var (stdout, stderr) = (await output, await errors);
        Assert.True(submitter.ExitCode == 2, $"exit {submitter.ExitCode}\n{stdout}\n{stderr}\n{string.Join("\n", node.Log)}");
        Assert.Contains("emptied failed: shard 0 (items 0+2): no node could read its input (node-1: none of the shard's 2 files is on node node-1 (the input folder", stderr, StringComparison.Ordinal);
        Assert.Contains("is empty; an unmounted share?)", stderr, StringComparison.Ordinal);

        // The changed job failed too, naming the file; the shard before it was committed, nothing after it ran.
        var status = await Cli.RunAsync(Dir, "status", "changed", "--cluster", connection);
        Assert.Contains("changed: failed", status.Out, StringComparison.Ordinal);
        Assert.Contains($"{victim} changed since the job was submitted (size {new FileInfo(images[3]).Length} → {new FileInfo(victim).Length}", status.Out, StringComparison.Ordinal);
        Assert.Equal(2L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results WHERE job_id = 'changed'"));
        Assert.Equal(0L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results WHERE job_id = 'emptied'"));

        // Nothing to export from a job that did not finish.
        var export = await Cli.RunAsync(Dir, "export", "changed", "--cluster", connection);
        Assert.Equal(2, export.ExitCode);
        Assert.Contains("Only a finished job is exported", export.Err, StringComparison.Ordinal);

        // A JSONL input, untouched: each shard's records are read from the offset the manifest keeps, and all land.
        Write("records.jsonl", string.Join("\n", ["# records", .. images.Select((image, i) => $$"""{"key": "r{{i}}", "path": "{{image}}"}"""), "", """{"key": "r9", "path": "/nonexistent.png"}"""]));
        var records = await Cli.RunAsync(Dir, "run", "records.jsonl", "--cluster", connection, "--shard-size", "2", "--job", "records", "-q");
        Assert.True(records.ExitCode == 1, records.Out + records.Err); // the nonexistent image fails alone
        Assert.Equal(4L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results WHERE job_id = 'records' AND status = 'ok'"));
        Assert.Equal("r9", await TextAsync(database, "SELECT key FROM inferpool_results WHERE job_id = 'records' AND status = 'failed'"));
        Assert.Equal(2L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_manifest WHERE job_id = 'records' AND record_offset > 0 AND item_index IN (2, 4)"));
    }

    [SkippableFact]
    public async Task A_node_that_sees_the_input_folder_empty_hands_its_shards_back_and_a_node_that_sees_it_runs_the_job()
    {
        // As an unmounted share looks to one machine: the blind node runs in a mount namespace of its own in which an
        // empty tmpfs covers the input folder; the other sees the files. The job must complete on the sighted node,
        // every item once, and a blind node that took a shard must have handed it back with its reason recorded.
        // (Freezing the sighted node until the blind one refuses does not work: the job's coordinator grain may live
        // on the frozen node, and then nothing moves until Orleans declares it dead.)
        Requirement.Needs(postgres.Unavailable);
        CopySamples(copies: 1);
        var input = Path.Combine(Dir, "in");
        Skip.IfNot(CanMountPrivately(input), "needs unshare -m and mount (root, or a user namespace that allows them)");
        var connection = postgres.NewDatabase();
        var blind = Node.StartWrapped(Dir, connection, "blind", ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs inferpool-blind \"$0\" && exec \"$@\"", input]);
        var sighted = Node.Start(Dir, connection, "sighted");
        var nodes = new List<Node> { blind, sighted };
        try
        {
            await using var database = NpgsqlDataSource.Create(connection);
            await InferPool.Cluster.NodeHost.PrepareDatabaseAsync(connection);
            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM OrleansMembershipTable WHERE Status = 3") == 2, "two active nodes", nodes);

            var run = await Cli.RunAsync(Dir, "run", "in", "--cluster", connection, "--shard-size", "1", "--job", "blind", "-q");

            Assert.True(run.ExitCode == 0, run.Out + run.Err + "\n" + string.Join("\n", blind.Log));
            Assert.Equal(20L, await ScalarAsync(database, "SELECT count(DISTINCT key) FROM inferpool_results WHERE job_id = 'blind' AND status = 'ok' AND node = 'sighted'"));
            Assert.Equal(20L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results WHERE job_id = 'blind'"));
            if (blind.Log.Any(l => l.Contains("blind: took shard", StringComparison.Ordinal)))
            {
                var reason = await TextAsync(database, "SELECT reason FROM inferpool_refusals WHERE job_id = 'blind' AND node = 'blind'");
                Assert.Contains("is empty; an unmounted share?", reason, StringComparison.Ordinal);
                var status = await Cli.RunAsync(Dir, "status", "blind", "--cluster", connection);
                Assert.Contains("refused by blind:", status.Out, StringComparison.Ordinal);
            }
        }
        finally
        {
            nodes.ForEach(n => n.Dispose());
        }
    }

    /// <summary>Whether a process here may cover <paramref name="folder"/> with a tmpfs in a mount namespace of its own.</summary>
    private static bool CanMountPrivately(string folder)
    {
        try
        {
            using var probe = Process.Start("unshare", ["-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs inferpool-probe \"$0\" && [ -z \"$(ls -A \"$0\")\" ]", folder]);
            probe.WaitForExit();
            return probe.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false; // no unshare
        }
    }

    [SkippableFact]
    public async Task A_node_restarted_under_its_name_and_port_mid_job_commits_its_shards()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        // Enough work that the restarted node finds shards left: it joins and loads its model in some seconds, while
        // node-2 alone, with both cores, runs about 25 images a second here.
        CopySamples(copies: 30);
        var (siloPort, gatewayPort) = (PostgresServer.FreePort(), PostgresServer.FreePort());
        var nodes = new List<Node> { Node.Start(Dir, connection, "node-1", siloPort, gatewayPort), Node.Start(Dir, connection, "node-2") };
        try
        {
            await using var database = NpgsqlDataSource.Create(connection);
            await InferPool.Cluster.NodeHost.PrepareDatabaseAsync(connection);
            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM OrleansMembershipTable WHERE Status = 3") == 2, "two active nodes", nodes);
            var submit = await Cli.RunAsync(Dir, "run", "in", "--cluster", connection, "--shard-size", "4", "--lease", "30", "--job", "restart", "--detach");
            Assert.True(submit.ExitCode == 0, submit.Out + submit.Err);

            // node-1 is killed while it holds a lease, and started again under the same name, address and port.
            await WaitForAsync(async () => await ScalarAsync(database, "SELECT count(*) FROM inferpool_shards WHERE state = 'done' AND owner = 'node-1'") >= 1
                && await ScalarAsync(database, "SELECT count(*) FROM inferpool_shards WHERE state = 'leased' AND owner = 'node-1'") == 1, "node-1 at work", nodes);
            nodes[0].Signal("-KILL");
            await nodes[0].ExitCodeAsync(Bound);
            // node-2 is frozen until the restarted node-1 has committed a shard, so that what this test is about
            // happens whatever the machine's speed (on a busy machine node-2 once finished the job before node-1 was
            // back). If Orleans declares node-2 dead meanwhile, it leaves when thawed, and node-1 does the rest.
            nodes[1].Signal("-STOP");
            var restarted = Node.Start(Dir, connection, "node-1", siloPort, gatewayPort);
            nodes.Add(restarted);

            // Meanwhile a submitter reattaches to the running job (the same spec under the same id), and status follows it.
            using var reattached = Cli.Start(Dir, "run", "in", "--cluster", connection, "--shard-size", "4", "--lease", "30", "--job", "restart");
            using var follower = Cli.Start(Dir, "status", "restart", "--follow", "--cluster", connection);
            var reattachedOut = reattached.StandardOutput.ReadToEndAsync();
            var followerOut = follower.StandardOutput.ReadToEndAsync();
            await WaitForAsync(() => Task.FromResult(restarted.Log.Any(l => l.Contains("node-1: committed shard", StringComparison.Ordinal))), "a commit by the restarted node-1", nodes);
            nodes[1].Signal("-CONT");
            await WaitForAsync(
                async () => await ScalarAsync(database, "SELECT count(*) FROM inferpool_shards WHERE job_id = 'restart' AND state <> 'done'") == 0,
                "every shard committed",
                nodes);
            await reattached.WaitForExitAsync().WaitAsync(Bound);
            await follower.WaitForExitAsync().WaitAsync(Bound);
            Assert.True(reattached.ExitCode == 0, await reattachedOut + await reattached.StandardError.ReadToEndAsync());
            Assert.Contains("Reattached to restart: 600 items", await reattachedOut, StringComparison.Ordinal);
            Assert.Contains("restart: done, 150/150 shards committed (0 leased), 600/600 items, 0 failed", await reattachedOut, StringComparison.Ordinal);
            Assert.Equal(0, follower.ExitCode);
            Assert.Contains("restart: done, 150/150 shards committed", await followerOut, StringComparison.Ordinal);

            // Another job under the same id is refused, naming the difference.
            var other = await Cli.RunAsync(Dir, "run", "in", "--cluster", connection, "--shard-size", "5", "--job", "restart");
            Assert.Equal(2, other.ExitCode);
            Assert.Contains("a job 'restart' already exists in this cluster, and its shards hold 4 items, not 5", other.Err, StringComparison.Ordinal);

            // Its commits count: none refused as stale, though its dead predecessor of the same name is in the membership table.
            Assert.True(restarted.Log.Any(l => l.Contains("node-1: committed shard", StringComparison.Ordinal)), string.Join("\n", restarted.Log));
            Assert.DoesNotContain(restarted.Log, l => l.Contains("is stale", StringComparison.Ordinal));
            Assert.Equal(600L, await ScalarAsync(database, "SELECT count(DISTINCT key) FROM inferpool_results WHERE job_id = 'restart'"));
            Assert.Equal(600L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_results WHERE job_id = 'restart'"));
            Assert.Equal("done", await TextAsync(database, "SELECT state FROM inferpool_jobs WHERE id = 'restart'"));

            // Export: every key exactly once, with its vector, as Parquet parts a local run would write.
            var export = await Cli.RunAsync(Dir, "export", "restart", "--cluster", connection, "-o", "exported", "--part-rows", "240");
            Assert.True(export.ExitCode == 0, export.Out + export.Err);
            var keys = await PartFiles.ReadParquetKeysAsync(Path.Combine(Dir, "exported"));
            Assert.Equal(600, keys.Count);
            Assert.Equal(600, keys.Distinct(StringComparer.Ordinal).Count());
            var exported = await PartFiles.ReadParquetAsync(Path.Combine(Dir, "exported"));
            var stored = await ReadResultsAsync(database, "restart");
            Assert.All(stored, kv => Assert.Equal(kv.Value, Assert.IsType<List<float>>(exported[kv.Key]["embedding"])));
            // The same columns, of the same types, as a local run of the same model writes.
            var local = await Cli.RunAsync(Dir, "run", "in/c0", "-o", "local", "-q");
            Assert.True(local.ExitCode == 0, local.Err);
            Assert.Equal(await SchemaAsync(Path.Combine(Dir, "local", "part-00000.parquet")), await SchemaAsync(Path.Combine(Dir, "exported", "part-00000.parquet")));

            // An export stopped after two of its three parts (as a crash leaves the folder: the journal lists two)
            // goes on from there, and writes the rest once.
            var folder = Path.Combine(Dir, "exported");
            File.Delete(Path.Combine(folder, "part-00002.parquet"));
            var journal = System.Text.Json.Nodes.JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(folder, "_inferpool_job.json")))!;
            // The journal lists runs of parts: part-00000 and part-00001 (240 rows each), then part-00002 (120).
            Assert.Equal(2, journal["parts"]!.AsArray().Count);
            journal["parts"]!.AsArray().RemoveAt(1);
            journal["finished"] = false;
            await File.WriteAllTextAsync(Path.Combine(folder, "_inferpool_job.json"), journal.ToJsonString());
            var resumed = await Cli.RunAsync(Dir, "export", "restart", "--cluster", connection, "-o", "exported", "--part-rows", "240");
            Assert.True(resumed.ExitCode == 0, resumed.Out + resumed.Err);
            Assert.Contains("going on after the 480 already exported", resumed.Out, StringComparison.Ordinal);
            keys = await PartFiles.ReadParquetKeysAsync(folder);
            Assert.Equal(600, keys.Count);
            Assert.Equal(600, keys.Distinct(StringComparer.Ordinal).Count());
        }
        finally
        {
            nodes.ForEach(n => n.Dispose());
        }
    }

    /// <summary>
    /// A text model (the built-in MiniLM, tokenized on the node) and a table with its columns mapped to a model's
    /// input run in a cluster as they run locally: the exported rows are the local run's, key for key.
    /// </summary>
    [SkippableFact]
    public async Task A_text_job_and_a_table_job_run_in_a_cluster_as_they_run_locally()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        Write("texts.txt", string.Join('\n', Enumerable.Range(0, 11).Select(i => $"Sentence {i}: {string.Join(' ', Enumerable.Repeat("inference at scale", 1 + (i % 4)))}.")));
        Write("table.csv", "id,a,b,c,d\n" + string.Join('\n', Enumerable.Range(0, 9).Select(i => $"row-{i},{i},{i * 0.5},{-i},{i * i}")));
        var model = Onnx.Tests.TinyModels.Affine(Dir, symbolicBatch: true);
        var nodes = new List<Node> { Node.Start(Dir, connection, "node-1") };
        try
        {
            var text = await Cli.RunAsync(Dir, "run", "texts.txt", "--model", "minilm", "--cluster", connection, "--shard-size", "4", "--job", "text", "-q");
            Assert.True(text.ExitCode == 0, text.Out + text.Err);
            var table = await Cli.RunAsync(Dir, "run", "table.csv", "--model", model, "--key", "id", "--column", "x=a,b,c,d", "--cluster", connection, "--shard-size", "4", "--job", "table", "-q");
            Assert.True(table.ExitCode == 0, table.Out + table.Err);
            foreach (var (job, local) in new[] { ("text", new[] { "texts.txt", "--model", "minilm" }), ("table", new[] { "table.csv", "--model", model, "--key", "id", "--column", "x=a,b,c,d" }) })
            {
                var export = await Cli.RunAsync(Dir, "export", job, "--cluster", connection, "-o", $"exported-{job}", "--format", "jsonl");
                Assert.True(export.ExitCode == 0, export.Out + export.Err);
                string[] arguments = ["run", .. local, "-o", $"local-{job}", "--format", "jsonl", "-q"];
                var run = await Cli.RunAsync(Dir, arguments);
                Assert.True(run.ExitCode == 0, run.Err);
                var exported = ReadJsonlVectors(Path.Combine(Dir, $"exported-{job}"));
                var expected = ReadJsonlVectors(Path.Combine(Dir, $"local-{job}"));
                Assert.Equal(job == "text" ? 11 : 9, expected.Count);
                Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), exported.Keys.Order(StringComparer.Ordinal));
                foreach (var (key, vector) in expected)
                {
                    // Texts are batched by length within a shard on the node and within the whole input locally:
                    // padding differs, so the floats may differ in their last bits.
                    Assert.Equal(vector.Length, exported[key].Length);
                    Assert.All(vector.Zip(exported[key]), p => Assert.Equal(p.First, p.Second, 1e-4));
                }
            }

            Assert.Equal([3f, 2f, -1f, 3f], ReadJsonlVectors(Path.Combine(Dir, "exported-table"))["row-1"].Select(v => MathF.Round(v, 3)));

            // A text job's options are part of the job: the same id with another pooling is refused, naming it.
            var other = await Cli.RunAsync(Dir, "run", "texts.txt", "--model", "minilm", "--pooling", "cls", "--cluster", connection, "--shard-size", "4", "--job", "text");
            Assert.Equal(2, other.ExitCode);
            Assert.Contains("\"pooling\":\"cls\"", other.Err, StringComparison.Ordinal);
        }
        finally
        {
            nodes.ForEach(n => n.Dispose());
        }
    }

    /// <summary>A key given twice is refused at submit, naming both items, and nothing is submitted.</summary>
    [SkippableFact]
    public async Task A_repeated_key_is_refused_at_submit_naming_both_items()
    {
        Requirement.Needs(postgres.Unavailable);
        var connection = postgres.NewDatabase();
        Write("dup.jsonl", string.Join('\n', new[] { "a", "b", "c", "b" }.Select(k => $$"""{"key": "{{k}}", "input": [1, 2, 3, 4]}""")));

        var run = await Cli.RunAsync(Dir, "run", "dup.jsonl", "--cluster", connection, "--job", "dup", "--detach");

        Assert.Equal(2, run.ExitCode);
        Assert.Contains("item 1 of JSONL file", run.Err, StringComparison.Ordinal);
        Assert.Contains("item 3", run.Err, StringComparison.Ordinal);
        Assert.Contains("nothing was submitted", run.Err, StringComparison.Ordinal);
        await using var database = NpgsqlDataSource.Create(connection);
        Assert.Equal(0L, await ScalarAsync(database, "SELECT count(*) FROM inferpool_jobs"));
    }

    /// <summary>Each row's key and its one vector column (whatever its name), from the JSONL parts of a folder.</summary>
    private static Dictionary<string, float[]> ReadJsonlVectors(string output) =>
        Directory.GetFiles(output, "part-*.jsonl").SelectMany(File.ReadAllLines).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToDictionary(
            r => r.GetProperty("key").GetString()!,
            r => r.EnumerateObject().Single(p => p.Value.ValueKind == System.Text.Json.JsonValueKind.Array).Value.EnumerateArray().Select(e => e.GetSingle()).ToArray(),
            StringComparer.Ordinal);

    /// <summary>Each row's key and its output (any JSON), as text, from the JSONL parts of a folder.</summary>
    private static Dictionary<string, string> ReadJsonlOutputs(string output) =>
        Directory.GetFiles(output, "part-*.jsonl").SelectMany(File.ReadAllLines).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
            .ToDictionary(r => r.GetProperty("key").GetString()!, r => r.GetProperty("output").GetRawText(), StringComparer.Ordinal);

    private static async Task<List<string>> SchemaAsync(string part)
    {
        await using var stream = File.OpenRead(part);
        await using var reader = await Parquet.ParquetReader.CreateAsync(stream);
        return [.. reader.Schema.GetDataFields().Select(f => $"{f.Path} {f.ClrType.Name} {f.IsNullable}")];
    }

    private void CopySamples(int copies)
    {
        var images = Directory.GetFiles(Cli.SampleImages).Where(f => !f.EndsWith(".md", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        for (var c = 0; c < copies; c++)
        {
            foreach (var image in images)
            {
                var target = Path.Combine(Dir, "in", $"c{c}", Path.GetFileName(image));
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(image, target);
            }
        }
    }

    private async Task<Dictionary<string, float[]>> ReferenceAsync()
    {
        var run = await Cli.RunAsync(Dir, "run", "in", "-o", "reference", "--format", "jsonl", "-q");
        Assert.True(run.ExitCode == 0, run.Err);
        return await PartFiles.ReadJsonlAsync(Path.Combine(Dir, "reference"));
    }

    private static async Task<Dictionary<string, float[]>> ReadResultsAsync(NpgsqlDataSource database, string job)
    {
        var rows = new Dictionary<string, float[]>(StringComparer.Ordinal);
        await using var command = database.CreateCommand($"SELECT key, vector FROM inferpool_results WHERE job_id = '{job}' AND status = 'ok'");
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows.Add(reader.GetString(0), reader.GetFieldValue<float[]>(1));
        }

        return rows;
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition, string what, IReadOnlyList<Node> nodes)
    {
        var deadline = Stopwatch.StartNew();
        while (!await condition())
        {
            if (deadline.Elapsed > Bound)
            {
                throw new TimeoutException($"Gave up waiting for {what}. Node logs:\n{string.Join("\n", nodes.SelectMany(n => n.Log.TakeLast(15).Select(l => $"[{n.Name}] {l}")))}");
            }

            // Polling a database another process writes: there is no event to wait on.
            await Task.Delay(100);
        }
    }

    /// <summary>The first shard leased right now, with its owner and epoch; null when none is.</summary>
    private static async Task<(string Owner, int Shard, long Epoch)?> LeasedShardAsync(NpgsqlDataSource database)
    {
        await using var command = database.CreateCommand("SELECT owner, shard, epoch FROM inferpool_shards WHERE state = 'leased' ORDER BY shard LIMIT 1");
        await using var reader = await command.ExecuteReaderAsync();
        return await reader.ReadAsync() ? (reader.GetString(0), reader.GetInt32(1), reader.GetInt64(2)) : null;
    }

    private static async Task<long> ScalarAsync(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
    }

    private static async Task<string?> TextAsync(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        return await command.ExecuteScalarAsync() as string;
    }

    /// <summary>One <c>inferpool node</c> process on loopback, its output kept.</summary>
    private sealed class Node : IDisposable
    {
        private readonly Process _process;

        private Node(string name, Process process)
        {
            Name = name;
            _process = process;
            _process.OutputDataReceived += (_, e) => Keep(e.Data);
            _process.ErrorDataReceived += (_, e) => Keep(e.Data);
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
        }

        public string Name { get; }

        public ConcurrentQueue<string> Log { get; } = new();

        public bool HasExited => _process.HasExited;

        public static Node Start(string dir, string connection, string name, params string[] extra) =>
            Start(dir, connection, name, PostgresServer.FreePort(), PostgresServer.FreePort(), extra);

        public static Node Start(string dir, string connection, string name, int siloPort, int gatewayPort, params string[] extra) =>
            Start(dir, connection, name, [], siloPort, gatewayPort, ["--fast-failure-detection", .. extra]);

        /// <summary>A node under a wrapper command (e.g. unshare), which gets the dotnet command line appended.</summary>
        public static Node StartWrapped(string dir, string connection, string name, string[] wrapper) =>
            Start(dir, connection, name, wrapper, PostgresServer.FreePort(), PostgresServer.FreePort(), ["--fast-failure-detection"]);

        private static Node Start(string dir, string connection, string name, string[] wrapper, int siloPort, int gatewayPort, string[] extra) => new(name, Cli.Start(
            dir,
            wrapper,
            [
                "node", "--cluster", connection, "--devices", "cpu=1", "--threads", "1", "--name", name, "--advertise", "127.0.0.1",
                "--silo-port", siloPort.ToString(CultureInfo.InvariantCulture),
                "--gateway-port", gatewayPort.ToString(CultureInfo.InvariantCulture),
                .. extra,
            ]));

        public async Task<int> ExitCodeAsync(TimeSpan bound)
        {
            await _process.WaitForExitAsync().WaitAsync(bound);
            return _process.ExitCode;
        }

        public void Signal(string signal)
        {
            using var kill = Process.Start("kill", [signal, _process.Id.ToString(CultureInfo.InvariantCulture)]);
            kill.WaitForExit();
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                Signal("-CONT");
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit();
            }

            _process.Dispose();
        }

        private void Keep(string? line)
        {
            if (line is not null)
            {
                Log.Enqueue(line);
            }
        }
    }
}
