using Npgsql;

namespace InferPool.Cluster.Tests;

/// <summary>docs/cluster-roles.sql, run on a real PostgreSQL: each role can do its job and nothing it should not.</summary>
[Collection(PostgresTests.Name)]
public sealed class ClusterRolesTests(PostgresServer postgres)
{
    [SkippableFact]
    public async Task The_documented_roles_submit_lease_commit_and_read_and_a_reader_cannot_submit()
    {
        Requirement.Needs(postgres.Unavailable);
        var owner = postgres.NewDatabase();
        await NodeHost.PrepareDatabaseAsync(owner);
        await using (var database = NpgsqlDataSource.Create(owner))
        {
            await using var roles = database.CreateCommand(await File.ReadAllTextAsync(Path.Combine(TestFiles.Directory, "cluster-roles.sql")));
            await roles.ExecuteNonQueryAsync();
        }

        var submitter = await ClusterStore.OpenAsync(As(owner, "inferpool_submitter"));
        await using (submitter.Database)
        {
            await submitter.CreateJobAsync(new ClusterJob("roles", "/in", "resnet18", 1, 2, 4, 30, "running"));
        }

        var node = await ClusterStore.OpenAsync(As(owner, "inferpool_node"));
        await using (node.Database)
        {
            var lease = await node.AcquireAsync("roles", "node-1", "inferpool", CancellationToken.None);
            Assert.NotNull(lease);
            Assert.True(await node.RenewAsync(lease, "node-1", CancellationToken.None));
            Assert.True(await node.CommitAsync(lease, "node-1", [new ClusterResult("a", 0, true, null, [1f], "cpu"), new ClusterResult("b", 1, true, null, [2f], "cpu")], CancellationToken.None));
            var second = await node.AcquireAsync("roles", "node-1", "inferpool", CancellationToken.None);
            Assert.True(await node.ReleaseAsync(second!, "node-1", CancellationToken.None));
            await node.RefuseAsync("roles", "node-2", "not allowed", CancellationToken.None);
        }

        var reader = await ClusterStore.OpenAsync(As(owner, "inferpool_reader"));
        await using (reader.Database)
        {
            var progress = await reader.ProgressAsync("roles");
            Assert.Equal((2, 1, 2L), (progress!.Shards, progress.Done, progress.Committed));
            Assert.Single(await reader.RefusalsAsync("roles"));
            var denied = await Assert.ThrowsAsync<PostgresException>(() => reader.CreateJobAsync(new ClusterJob("sneaky", "/in", "resnet18", 1, 1, 1, 30, "running")));
            Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, denied.SqlState);
        }
    }

    private static string As(string connection, string role) => new NpgsqlConnectionStringBuilder(connection) { Username = role }.ConnectionString;
}
