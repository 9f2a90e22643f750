using Npgsql;
using NpgsqlTypes;

namespace InferPool.Cluster;

/// <summary>A job as stored: what to run (an ONNX model, or a worker command when <see cref="Worker"/> is set) and how it is split.</summary>
/// <param name="Id">The job's id.</param>
/// <param name="Input">The input's full path, readable by every node.</param>
/// <param name="Model">The built-in model's name or an .onnx path every node can read (<c>worker</c> for a worker job).</param>
/// <param name="Batch">Most items per model call.</param>
/// <param name="ShardSize">Items per shard: the unit a node leases, runs and commits.</param>
/// <param name="TotalItems">Items in the input when the job was submitted.</param>
/// <param name="LeaseSeconds">How long a lease lasts without renewal.</param>
/// <param name="State"><c>running</c>, <c>cancelled</c>.</param>
/// <param name="Worker">The worker command every node starts, or null for an ONNX model.</param>
public sealed record ClusterJob(string Id, string Input, string Model, int Batch, int ShardSize, long TotalItems, int LeaseSeconds, string State, string? Worker = null);

/// <summary>A shard granted to a node: items [First, First + Count) of the job's input, valid while <see cref="Epoch"/> is the shard's.</summary>
/// <param name="JobId">The job.</param>
/// <param name="Shard">The shard's number.</param>
/// <param name="First">Its first item's index.</param>
/// <param name="Count">Its items.</param>
/// <param name="Epoch">The lease's epoch; a commit with an older one is refused.</param>
/// <param name="LeaseSeconds">How long the lease lasts without renewal.</param>
[GenerateSerializer]
[Immutable]
public sealed record ShardLease(
    [property: Id(0)] string JobId,
    [property: Id(1)] int Shard,
    [property: Id(2)] long First,
    [property: Id(3)] int Count,
    [property: Id(4)] long Epoch,
    [property: Id(5)] int LeaseSeconds);

/// <summary>A job's progress: shards by state and items committed.</summary>
/// <param name="JobId">The job.</param>
/// <param name="State">Its state.</param>
/// <param name="Shards">All its shards.</param>
/// <param name="Done">Shards committed.</param>
/// <param name="Leased">Shards leased now.</param>
/// <param name="TotalItems">Items in the job.</param>
/// <param name="Committed">Items committed.</param>
/// <param name="Failed">Committed items that failed.</param>
[GenerateSerializer]
[Immutable]
public sealed record JobProgress(
    [property: Id(0)] string JobId,
    [property: Id(1)] string State,
    [property: Id(2)] int Shards,
    [property: Id(3)] int Done,
    [property: Id(4)] int Leased,
    [property: Id(5)] long TotalItems,
    [property: Id(6)] long Committed,
    [property: Id(7)] long Failed)
{
    /// <summary>Every shard is committed.</summary>
    public bool Finished => Shards > 0 && Done == Shards;
}

/// <summary>One item's result, as a node commits it.</summary>
/// <param name="Key">The item's key.</param>
/// <param name="Index">Its index in the job's input.</param>
/// <param name="Ok">Whether it succeeded.</param>
/// <param name="Error">Why it failed.</param>
/// <param name="Vector">The model's first output.</param>
/// <param name="Device">Where it ran.</param>
public sealed record ClusterResult(string Key, long Index, bool Ok, string? Error, float[]? Vector, string? Device);

/// <summary>
/// Jobs, shard leases and results in PostgreSQL. A lease is granted by bumping the shard's epoch; results are
/// committed in one transaction that flips the shard to done only if that epoch is still the shard's, so a
/// node that lost its lease (stopped, cut off, too slow) cannot commit, and no item is committed twice.
/// </summary>
/// <param name="database">The cluster's database, its schema applied (<see cref="OpenAsync"/>).</param>
public sealed class ClusterStore(NpgsqlDataSource database)
{
    /// <summary>The cluster's database.</summary>
    public NpgsqlDataSource Database { get; } = database;

    /// <summary>Opens the store on <paramref name="connectionString"/>, applying the schema first (idempotent).</summary>
    /// <param name="connectionString">The PostgreSQL connection string (Npgsql form).</param>
    /// <param name="cancellationToken">Stops the opening.</param>
    /// <returns>The store and the data source it owns; dispose the data source when done.</returns>
    /// <exception cref="NpgsqlException">The database is not reachable.</exception>
    public static async Task<ClusterStore> OpenAsync(string connectionString, CancellationToken cancellationToken = default)
    {
        var database = NpgsqlDataSource.Create(connectionString);
        try
        {
            await ClusterSchema.EnsureAsync(database, cancellationToken).ConfigureAwait(false);
            return new ClusterStore(database);
        }
        catch
        {
            await database.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Creates a job and its shards.</summary>
    /// <param name="job">The job.</param>
    /// <param name="cancellationToken">Stops before the transaction commits.</param>
    public async Task CreateJobAsync(ClusterJob job, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(job);
        using var connection = await Database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        using (var insert = new NpgsqlCommand(
            "INSERT INTO inferpool_jobs (id, input, model, batch, shard_size, total_items, lease_seconds, worker) VALUES (@id, @input, @model, @batch, @shard, @total, @lease, @worker)",
            connection,
            transaction))
        {
            insert.Parameters.AddWithValue("id", job.Id);
            insert.Parameters.AddWithValue("input", job.Input);
            insert.Parameters.AddWithValue("model", job.Model);
            insert.Parameters.AddWithValue("batch", job.Batch);
            insert.Parameters.AddWithValue("shard", job.ShardSize);
            insert.Parameters.AddWithValue("total", job.TotalItems);
            insert.Parameters.AddWithValue("lease", job.LeaseSeconds);
            insert.Parameters.AddWithValue("worker", (object?)job.Worker ?? DBNull.Value);
            await insert.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        using (var shards = new NpgsqlCommand(
            """
            INSERT INTO inferpool_shards (job_id, shard, first_index, count)
            SELECT @id, s, s::bigint * @size, LEAST(@size, @total - s::bigint * @size)::integer
            FROM generate_series(0, ((@total + @size - 1) / @size)::integer - 1) AS s
            """,
            connection,
            transaction))
        {
            shards.Parameters.AddWithValue("id", job.Id);
            shards.Parameters.AddWithValue("size", (long)job.ShardSize);
            shards.Parameters.AddWithValue("total", job.TotalItems);
            await shards.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    internal async Task<ClusterJob?> GetJobAsync(string id, CancellationToken cancellationToken)
    {
        using var command = Database.CreateCommand("SELECT id, input, model, batch, shard_size, total_items, lease_seconds, state, worker FROM inferpool_jobs WHERE id = @id");
        command.Parameters.AddWithValue("id", id);
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? ReadJob(reader) : null;
    }

    /// <summary>Jobs still running (not cancelled, not every shard done), oldest first.</summary>
    internal async Task<IReadOnlyList<ClusterJob>> RunningJobsAsync(CancellationToken cancellationToken)
    {
        using var command = Database.CreateCommand(
            """
            SELECT j.id, j.input, j.model, j.batch, j.shard_size, j.total_items, j.lease_seconds, j.state, j.worker FROM inferpool_jobs j
            WHERE j.state = 'running' AND EXISTS (SELECT 1 FROM inferpool_shards s WHERE s.job_id = j.id AND s.state <> 'done')
            ORDER BY j.created
            """);
        var jobs = new List<ClusterJob>();
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            jobs.Add(ReadJob(reader));
        }

        return jobs;
    }

    /// <summary>
    /// Grants the first shard that is pending, whose lease ran out, or whose owner Orleans has declared dead
    /// (membership status 6), to <paramref name="node"/> with the next epoch. Null when none is free.
    /// </summary>
    internal async Task<ShardLease?> AcquireAsync(string jobId, string node, string clusterId, CancellationToken cancellationToken)
    {
        using var command = Database.CreateCommand(
            """
            UPDATE inferpool_shards s
            SET state = 'leased', epoch = s.epoch + 1, owner = @node, lease_expires = now() + make_interval(secs => j.lease_seconds)
            FROM inferpool_jobs j
            WHERE j.id = s.job_id AND j.state = 'running' AND (s.job_id, s.shard) = (
                SELECT c.job_id, c.shard FROM inferpool_shards c
                WHERE c.job_id = @job AND (c.state = 'pending'
                    OR (c.state = 'leased' AND (c.lease_expires < now()
                        OR c.owner IN (SELECT SiloName FROM OrleansMembershipTable WHERE DeploymentId = @cluster AND Status = 6))))
                ORDER BY c.shard LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING s.job_id, s.shard, s.first_index, s.count, s.epoch, j.lease_seconds
            """);
        command.Parameters.AddWithValue("job", jobId);
        command.Parameters.AddWithValue("node", node);
        command.Parameters.AddWithValue("cluster", clusterId);
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false)
            ? new ShardLease(reader.GetString(0), reader.GetInt32(1), reader.GetInt64(2), reader.GetInt32(3), reader.GetInt64(4), reader.GetInt32(5))
            : null;
    }

    /// <summary>Records that <paramref name="node"/> will not run a job, and why (once per job and node).</summary>
    internal async Task RefuseAsync(string jobId, string node, string reason, CancellationToken cancellationToken)
    {
        using var command = Database.CreateCommand("INSERT INTO inferpool_refusals (job_id, node, reason) VALUES (@job, @node, @reason) ON CONFLICT DO NOTHING");
        command.Parameters.AddWithValue("job", jobId);
        command.Parameters.AddWithValue("node", node);
        command.Parameters.AddWithValue("reason", reason);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The nodes that refused a job, with their reasons, oldest first.</summary>
    /// <param name="jobId">The job.</param>
    /// <param name="cancellationToken">Stops the query.</param>
    public async Task<IReadOnlyList<(string Node, string Reason)>> RefusalsAsync(string jobId, CancellationToken cancellationToken = default)
    {
        using var command = Database.CreateCommand("SELECT node, reason FROM inferpool_refusals WHERE job_id = @job ORDER BY at, node");
        command.Parameters.AddWithValue("job", jobId);
        var refusals = new List<(string, string)>();
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            refusals.Add((reader.GetString(0), reader.GetString(1)));
        }

        return refusals;
    }

    /// <summary>Gives a leased shard back (pending again, no owner) so any node may take it now; false when it has moved on.</summary>
    internal async Task<bool> ReleaseAsync(ShardLease lease, string node, CancellationToken cancellationToken)
    {
        using var command = HeldShardUpdate("state = 'pending', owner = NULL, lease_expires = NULL", lease, node);
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <summary>Extends a lease; false when the shard has moved on (another epoch, or done).</summary>
    internal async Task<bool> RenewAsync(ShardLease lease, string node, CancellationToken cancellationToken)
    {
        using var command = HeldShardUpdate("lease_expires = now() + make_interval(secs => @seconds)", lease, node);
        command.Parameters.AddWithValue("seconds", lease.LeaseSeconds);
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <summary>An update of the shard <paramref name="lease"/> holds, applied only while <paramref name="node"/> still holds it under that epoch.</summary>
    private NpgsqlCommand HeldShardUpdate(string set, ShardLease lease, string node)
    {
        var command = Database.CreateCommand(
            $"UPDATE inferpool_shards SET {set} WHERE job_id = @job AND shard = @shard AND epoch = @epoch AND owner = @node AND state = 'leased'");
        command.Parameters.AddWithValue("job", lease.JobId);
        command.Parameters.AddWithValue("shard", lease.Shard);
        command.Parameters.AddWithValue("epoch", lease.Epoch);
        command.Parameters.AddWithValue("node", node);
        return command;
    }

    /// <summary>
    /// Commits a shard's results in one transaction that first flips the shard to done, only if the lease's epoch
    /// is still the shard's. Returns false (and writes nothing) for a stale lease.
    /// </summary>
    internal async Task<bool> CommitAsync(ShardLease lease, string node, IReadOnlyList<ClusterResult> results, CancellationToken cancellationToken)
    {
        using var connection = await Database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        using (var flip = new NpgsqlCommand(
            "UPDATE inferpool_shards SET state = 'done', done_at = now() WHERE job_id = @job AND shard = @shard AND epoch = @epoch AND state = 'leased'",
            connection,
            transaction))
        {
            flip.Parameters.AddWithValue("job", lease.JobId);
            flip.Parameters.AddWithValue("shard", lease.Shard);
            flip.Parameters.AddWithValue("epoch", lease.Epoch);
            if (await flip.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) != 1)
            {
                await transaction.RollbackAsync(cancellationToken).ConfigureAwait(false);
                return false;
            }
        }

        var import = await connection.BeginBinaryImportAsync(
            "COPY inferpool_results (job_id, key, item_index, status, error, vector, node, device, shard, epoch) FROM STDIN (FORMAT BINARY)",
            cancellationToken).ConfigureAwait(false);
        await using (import.ConfigureAwait(false))
        {
            foreach (var r in results)
            {
                await import.StartRowAsync(cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(lease.JobId, NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(r.Key, NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(r.Index, NpgsqlDbType.Bigint, cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(r.Ok ? "ok" : "failed", NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
                await WriteNullableAsync(import, r.Error, NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
                await WriteNullableAsync(import, r.Vector, NpgsqlDbType.Array | NpgsqlDbType.Real, cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(node, NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
                await WriteNullableAsync(import, r.Device, NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(lease.Shard, NpgsqlDbType.Integer, cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(lease.Epoch, NpgsqlDbType.Bigint, cancellationToken).ConfigureAwait(false);
            }

            await import.CompleteAsync(cancellationToken).ConfigureAwait(false);
        }

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>A job's progress, or null for an unknown job.</summary>
    /// <param name="jobId">The job.</param>
    /// <param name="cancellationToken">Stops the query.</param>
    public async Task<JobProgress?> ProgressAsync(string jobId, CancellationToken cancellationToken = default)
    {
        using var command = Database.CreateCommand(
            """
            SELECT j.id, j.state, j.total_items,
                   (SELECT count(*) FROM inferpool_shards s WHERE s.job_id = j.id)::integer,
                   (SELECT count(*) FROM inferpool_shards s WHERE s.job_id = j.id AND s.state = 'done')::integer,
                   (SELECT count(*) FROM inferpool_shards s WHERE s.job_id = j.id AND s.state = 'leased')::integer,
                   (SELECT count(*) FROM inferpool_results r WHERE r.job_id = j.id),
                   (SELECT count(*) FROM inferpool_results r WHERE r.job_id = j.id AND r.status = 'failed')
            FROM inferpool_jobs j WHERE j.id = @id
            """);
        command.Parameters.AddWithValue("id", jobId);
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false)
            ? new JobProgress(reader.GetString(0), reader.GetString(1), reader.GetInt32(3), reader.GetInt32(4), reader.GetInt32(5), reader.GetInt64(2), reader.GetInt64(6), reader.GetInt64(7))
            : null;
    }

    /// <summary>The latest 50 jobs' ids, newest first.</summary>
    /// <param name="cancellationToken">Stops the query.</param>
    public async Task<IReadOnlyList<string>> JobIdsAsync(CancellationToken cancellationToken = default)
    {
        using var command = Database.CreateCommand("SELECT id FROM inferpool_jobs ORDER BY created DESC LIMIT 50");
        var ids = new List<string>();
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            ids.Add(reader.GetString(0));
        }

        return ids;
    }

    /// <summary>Stops a job: no more leases are granted; a shard being committed right now still lands.</summary>
    /// <param name="jobId">The job.</param>
    /// <param name="cancellationToken">Stops the update.</param>
    /// <returns>False when the job is unknown or not running.</returns>
    public async Task<bool> CancelAsync(string jobId, CancellationToken cancellationToken = default)
    {
        using var command = Database.CreateCommand("UPDATE inferpool_jobs SET state = 'cancelled' WHERE id = @id AND state = 'running'");
        command.Parameters.AddWithValue("id", jobId);
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
    }

    private static ClusterJob ReadJob(NpgsqlDataReader reader) =>
        new(reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetInt32(3), reader.GetInt32(4), reader.GetInt64(5), reader.GetInt32(6), reader.GetString(7), reader.IsDBNull(8) ? null : reader.GetString(8));

    private static Task WriteNullableAsync<T>(NpgsqlBinaryImporter import, T? value, NpgsqlDbType type, CancellationToken cancellationToken)
        where T : class =>
        value is null ? import.WriteNullAsync(cancellationToken) : import.WriteAsync(value, type, cancellationToken);
}
