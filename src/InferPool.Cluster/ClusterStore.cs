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
public sealed record ClusterJob(string Id, string Input, string Model, int Batch, int ShardSize, long TotalItems, int LeaseSeconds, string State, string? Worker = null)
{
    /// <summary>The <see cref="Model"/> of a worker job whose outputs are numbers, stored as float lists.</summary>
    public const string WorkerVector = "worker";

    /// <summary>The <see cref="Model"/> of a worker job whose outputs are kept as JSON text.</summary>
    public const string WorkerJson = "worker-json";

    /// <summary>The input file's size when the job was submitted (a list, JSONL, text or table file), or null (a folder).</summary>
    public long? InputSize { get; init; }

    /// <summary>The input file's last write time (UTC) when the job was submitted, or null (a folder).</summary>
    public DateTime? InputModified { get; init; }

    /// <summary>Why the job failed (state <c>failed</c>), or null.</summary>
    public string? Error { get; init; }

    /// <summary>
    /// The job's output columns as a local run of its engine names them (JSON: name, json, element type, item shape),
    /// recorded by the first node that loaded it, or null before that.
    /// </summary>
    public string? Columns { get; init; }

    /// <summary>What the nodes need besides the model to build its engine and read the input (a text model's tokenizer, a table's columns); the default for an image or record model.</summary>
    public ClusterEngineOptions Engine { get; init; } = new();
}

/// <summary>One item of a job's manifest: what the submitter found, which every node checks before running it.</summary>
/// <param name="Index">Its index in the job's input.</param>
/// <param name="Key">Its key.</param>
/// <param name="Path">The file it is (a folder's or a list's item), or null (a record, a text, a table row).</param>
/// <param name="Size">That file's size at submit, or null.</param>
/// <param name="Modified">That file's last write time (UTC) at submit, or null.</param>
public sealed record ManifestItem(long Index, string Key, string? Path, long? Size, DateTime? Modified)
{
    /// <summary>Where the item's line starts in a line-based input file (JSONL, text, list), so a node reads its shard from there; or null.</summary>
    public InferPool.Jobs.Inputs.RecordPosition? Position { get; init; }
}

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
/// <param name="Error">Why the job failed (state <c>failed</c>: a shard failed loudly), or null.</param>
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
    [property: Id(7)] long Failed,
    [property: Id(8)] string? Error = null)
{
    /// <summary>Every shard is committed and every item of the job is accounted for (committed ok or failed).</summary>
    public bool Finished => Shards > 0 && Done == Shards && Committed == TotalItems;

    /// <summary>Every shard is committed, yet not every item is accounted for: the job's results are incomplete.</summary>
    public bool Unaccounted => Shards > 0 && Done == Shards && Committed != TotalItems;
}

/// <summary>A shard that cannot succeed on any node (its input changed since submit, its results cannot be stored): it fails the job, with the reason.</summary>
public sealed class ShardFailedException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>One item's result, as a node commits it.</summary>
/// <param name="Key">The item's key.</param>
/// <param name="Index">Its index in the job's input.</param>
/// <param name="Ok">Whether it succeeded.</param>
/// <param name="Error">Why it failed.</param>
/// <param name="Vector">The model's first output.</param>
/// <param name="Device">Where it ran.</param>
public sealed record ClusterResult(string Key, long Index, bool Ok, string? Error, float[]? Vector, string? Device)
{
    /// <summary>Every output of the model, as it came out (any number, element type and shape), or null.</summary>
    public IReadOnlyList<InferPool.Onnx.Tensors.TensorData>? Outputs { get; init; }

    /// <summary>A worker's output kept as JSON text, or null.</summary>
    public string? Json { get; init; }
}

/// <summary>One item's committed result, as exported.</summary>
/// <param name="Key">The item's key.</param>
/// <param name="Index">Its index in the job's input.</param>
/// <param name="Ok">Whether it succeeded.</param>
/// <param name="Error">Why it failed.</param>
/// <param name="Vector">The model's first output.</param>
/// <param name="Node">The node that committed it.</param>
/// <param name="Device">Where it ran.</param>
public sealed record CommittedResult(string Key, long Index, bool Ok, string? Error, float[]? Vector, string Node, string? Device)
{
    /// <summary>Every output of the model as it came out, or null (a job committed before they were stored).</summary>
    public IReadOnlyList<InferPool.Onnx.Tensors.TensorData>? Outputs { get; init; }

    /// <summary>A worker's output kept as JSON text, or null.</summary>
    public string? Json { get; init; }
}

/// <summary>What a job's nodes are doing now, and how fast it goes.</summary>
/// <param name="ItemsLastMinute">Items committed in the last 60 seconds.</param>
/// <param name="Leases">Each shard leased now: its owner, number, first item and size, oldest first.</param>
public sealed record JobActivity(long ItemsLastMinute, IReadOnlyList<(string Node, int Shard, long First, int Count)> Leases)
{
    /// <summary>Items per second over the last minute.</summary>
    public double ItemsPerSecond => ItemsLastMinute / 60.0;
}

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
    /// <exception cref="ArgumentException">A <c>PasswordEnv</c> entry names a variable that is not set (<see cref="ClusterConnection"/>).</exception>
    public static async Task<ClusterStore> OpenAsync(string connectionString, CancellationToken cancellationToken = default)
    {
        var database = NpgsqlDataSource.Create(ClusterConnection.Resolve(connectionString));
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
    public Task CreateJobAsync(ClusterJob job, CancellationToken cancellationToken = default) => CreateJobAsync(job, null, cancellationToken);

    /// <summary>
    /// Creates a job, its manifest and its shards in one transaction. With a manifest, the job's items are the
    /// manifest's (<see cref="ClusterJob.TotalItems"/> is its count): nodes run exactly those, checking each file
    /// against what the submitter found, and the job is finished only when every one of them is accounted for.
    /// </summary>
    /// <param name="job">The job.</param>
    /// <param name="manifest">The job's items in order (indexes 0, 1, …), or null to run the input as the nodes find it.</param>
    /// <param name="cancellationToken">Stops before the transaction commits.</param>
    /// <returns>The number of items in the job.</returns>
    /// <exception cref="ArgumentException">The manifest's indexes are not 0, 1, 2, … in order, or it is empty.</exception>
    public async Task<long> CreateJobAsync(ClusterJob job, IAsyncEnumerable<ManifestItem>? manifest, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(job);
        using var connection = await Database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        using (var insert = new NpgsqlCommand(
            """
            INSERT INTO inferpool_jobs (id, input, model, batch, shard_size, total_items, lease_seconds, worker, input_size, input_modified, engine)
            VALUES (@id, @input, @model, @batch, @shard, @total, @lease, @worker, @size, @modified, @engine)
            """,
            connection,
            transaction))
        {
            insert.Parameters.AddWithValue("size", (object?)job.InputSize ?? DBNull.Value);
            insert.Parameters.AddWithValue("modified", job.InputModified is { } m ? DateTime.SpecifyKind(m, DateTimeKind.Utc) : DBNull.Value);
            insert.Parameters.AddWithValue("id", job.Id);
            insert.Parameters.AddWithValue("input", job.Input);
            insert.Parameters.AddWithValue("model", job.Model);
            insert.Parameters.AddWithValue("batch", job.Batch);
            insert.Parameters.AddWithValue("shard", job.ShardSize);
            insert.Parameters.AddWithValue("total", job.TotalItems);
            insert.Parameters.AddWithValue("lease", job.LeaseSeconds);
            insert.Parameters.AddWithValue("worker", (object?)job.Worker ?? DBNull.Value);
            insert.Parameters.AddWithValue("engine", job.Engine.IsDefault ? DBNull.Value : job.Engine.ToJson());
            await insert.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        var total = job.TotalItems;
        if (manifest is not null)
        {
            total = await CopyManifestAsync(connection, job.Id, manifest, cancellationToken).ConfigureAwait(false);
            using var count = new NpgsqlCommand("UPDATE inferpool_jobs SET total_items = @total WHERE id = @id", connection, transaction);
            count.Parameters.AddWithValue("id", job.Id);
            count.Parameters.AddWithValue("total", total);
            await count.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
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
            shards.Parameters.AddWithValue("total", total);
            await shards.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        await NotifyAsync(connection, transaction, ClusterSignals.WorkChannel, "", cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return total;
    }

    private static async Task<long> CopyManifestAsync(NpgsqlConnection connection, string jobId, IAsyncEnumerable<ManifestItem> manifest, CancellationToken cancellationToken)
    {
        long count = 0;
        var import = await connection.BeginBinaryImportAsync(
            "COPY inferpool_manifest (job_id, item_index, key, path, size, modified, record_offset, lines_before) FROM STDIN (FORMAT BINARY)",
            cancellationToken).ConfigureAwait(false);
        await using (import.ConfigureAwait(false))
        {
            await foreach (var item in manifest.WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                if (item.Index != count)
                {
                    throw new ArgumentException($"The manifest's item {count} has index {item.Index}; indexes must be 0, 1, 2, … in order.", nameof(manifest));
                }

                await import.StartRowAsync(cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(jobId, NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(item.Index, NpgsqlDbType.Bigint, cancellationToken).ConfigureAwait(false);
                await import.WriteAsync(item.Key, NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
                await WriteNullableAsync(import, item.Path, NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
                await WriteNullableValueAsync(import, item.Size, NpgsqlDbType.Bigint, cancellationToken).ConfigureAwait(false);
                await WriteNullableValueAsync<DateTime>(import, item.Modified is { } m ? DateTime.SpecifyKind(m, DateTimeKind.Utc) : null, NpgsqlDbType.TimestampTz, cancellationToken).ConfigureAwait(false);
                await WriteNullableValueAsync(import, item.Position?.Offset, NpgsqlDbType.Bigint, cancellationToken).ConfigureAwait(false);
                await WriteNullableValueAsync(import, item.Position?.LinesBefore, NpgsqlDbType.Bigint, cancellationToken).ConfigureAwait(false);
                count++;
            }

            if (count == 0)
            {
                throw new ArgumentException("The manifest is empty: a job needs at least one item.", nameof(manifest));
            }

            await import.CompleteAsync(cancellationToken).ConfigureAwait(false);
        }

        return count;
    }

    /// <summary>Items [<paramref name="first"/>, <paramref name="first"/> + <paramref name="count"/>) of a job's manifest, in order; empty for a job without one.</summary>
    internal async Task<IReadOnlyList<ManifestItem>> ManifestAsync(string jobId, long first, int count, CancellationToken cancellationToken)
    {
        using var command = Database.CreateCommand(
            "SELECT item_index, key, path, size, modified, record_offset, lines_before FROM inferpool_manifest WHERE job_id = @job AND item_index >= @first AND item_index < @end ORDER BY item_index");
        command.Parameters.AddWithValue("job", jobId);
        command.Parameters.AddWithValue("first", first);
        command.Parameters.AddWithValue("end", first + count);
        var items = new List<ManifestItem>(count);
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            items.Add(new ManifestItem(
                reader.GetInt64(0),
                reader.GetString(1),
                reader.IsDBNull(2) ? null : reader.GetString(2),
                reader.IsDBNull(3) ? null : reader.GetInt64(3),
                reader.IsDBNull(4) ? null : reader.GetDateTime(4))
            {
                Position = reader.IsDBNull(5) ? null : new InferPool.Jobs.Inputs.RecordPosition(reader.GetInt64(5), reader.GetInt64(6)),
            });
        }

        return items;
    }

    /// <summary>
    /// Hands a shard back because this node cannot read its input (a folder that is missing, unreadable or empty here
    /// while the manifest lists files: an unmounted share, say), and records that the node will not run the job. The
    /// shard goes to another node; after <paramref name="maxProblems"/> such hand-backs, or once every active node has
    /// refused the job, the shard fails and the job with it, naming each node's reason.
    /// </summary>
    /// <returns>True when the shard (and the job) failed.</returns>
    internal async Task<bool> HandBackUnreadableAsync(ShardLease lease, string node, string reason, string clusterId, int maxProblems, CancellationToken cancellationToken)
    {
        using var connection = await Database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        using (var refuse = new NpgsqlCommand("INSERT INTO inferpool_refusals (job_id, node, reason) VALUES (@job, @node, @reason) ON CONFLICT DO NOTHING", connection, transaction))
        {
            refuse.Parameters.AddWithValue("job", lease.JobId);
            refuse.Parameters.AddWithValue("node", node);
            refuse.Parameters.AddWithValue("reason", reason);
            await refuse.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        int problems;
        long refused;
        long active;
        using (var back = new NpgsqlCommand(
            """
            WITH back AS (
                UPDATE inferpool_shards SET state = 'pending', owner = NULL, owner_silo = NULL, lease_expires = NULL, problems = problems + 1
                WHERE job_id = @job AND shard = @shard AND epoch = @epoch AND owner = @node AND state = 'leased'
                RETURNING problems)
            SELECT (SELECT problems FROM back),
                   (SELECT count(*) FROM inferpool_refusals WHERE job_id = @job),
                   (SELECT count(*) FROM OrleansMembershipTable WHERE DeploymentId = @cluster AND Status = 3)
            """,
            connection,
            transaction))
        {
            AddLease(back, lease);
            back.Parameters.AddWithValue("node", node);
            back.Parameters.AddWithValue("cluster", clusterId);
            using var reader = await back.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            if (reader.IsDBNull(0))
            {
                // The shard moved on meanwhile: nothing to hand back; the refusal stands.
                await reader.DisposeAsync().ConfigureAwait(false);
                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                return false;
            }

            (problems, refused, active) = (reader.GetInt32(0), reader.GetInt64(1), reader.GetInt64(2));
        }

        var failed = problems >= maxProblems || refused >= Math.Max(1, active);
        if (failed)
        {
            string reasons;
            using (var all = new NpgsqlCommand("SELECT string_agg(node || ': ' || reason, '; ' ORDER BY at) FROM inferpool_refusals WHERE job_id = @job", connection, transaction))
            {
                all.Parameters.AddWithValue("job", lease.JobId);
                reasons = (string?)await all.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) ?? reason;
            }

            var why = $"no node could read its input ({reasons})";
            using (var fail = new NpgsqlCommand("UPDATE inferpool_shards SET state = 'failed', error = @why WHERE job_id = @job AND shard = @shard", connection, transaction))
            {
                fail.Parameters.AddWithValue("job", lease.JobId);
                fail.Parameters.AddWithValue("shard", lease.Shard);
                fail.Parameters.AddWithValue("why", why);
                await fail.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }

            await FailJobAsync(connection, transaction, lease.JobId, $"shard {lease.Shard} (items {lease.First}+{lease.Count}): {why}", cancellationToken).ConfigureAwait(false);
        }

        await NotifyAsync(connection, transaction, failed ? ClusterSignals.ProgressChannel : ClusterSignals.WorkChannel, failed ? lease.JobId : "", cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return failed;
    }

    /// <summary>
    /// Fails a shard that no node can run, and with it the job (no more leases): only while
    /// <paramref name="lease"/> still holds it. False when the shard has moved on.
    /// </summary>
    internal async Task<bool> FailShardAsync(ShardLease lease, string node, string reason, CancellationToken cancellationToken)
    {
        using var connection = await Database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        using (var shard = new NpgsqlCommand(
            "UPDATE inferpool_shards SET state = 'failed', error = @reason, lease_expires = NULL WHERE job_id = @job AND shard = @shard AND epoch = @epoch AND state = 'leased'",
            connection,
            transaction))
        {
            AddLease(shard, lease);
            shard.Parameters.AddWithValue("reason", reason);
            if (await shard.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) != 1)
            {
                await transaction.RollbackAsync(cancellationToken).ConfigureAwait(false);
                return false;
            }
        }

        await FailJobAsync(connection, transaction, lease.JobId, $"shard {lease.Shard} (items {lease.First}+{lease.Count}) failed on node {node}: {reason}", cancellationToken).ConfigureAwait(false);
        await NotifyAsync(connection, transaction, ClusterSignals.ProgressChannel, lease.JobId, cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return true;
    }

    internal async Task<ClusterJob?> GetJobAsync(string id, CancellationToken cancellationToken)
    {
        using var command = Database.CreateCommand("SELECT id, input, model, batch, shard_size, total_items, lease_seconds, state, worker, input_size, input_modified, error, columns, engine FROM inferpool_jobs WHERE id = @id");
        command.Parameters.AddWithValue("id", id);
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? ReadJob(reader) : null;
    }

    /// <summary>Jobs still running (not cancelled, not every shard done), oldest first.</summary>
    internal async Task<IReadOnlyList<ClusterJob>> RunningJobsAsync(CancellationToken cancellationToken)
    {
        using var command = Database.CreateCommand(
            """
            SELECT j.id, j.input, j.model, j.batch, j.shard_size, j.total_items, j.lease_seconds, j.state, j.worker, j.input_size, j.input_modified, j.error, j.columns, j.engine
            FROM inferpool_jobs j
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
    /// <remarks>
    /// A lease's owner is told apart by its silo incarnation (<paramref name="silo"/>: address, port and generation, as
    /// Orleans' membership table has them), not by its name: a node restarted under its old name is a new
    /// incarnation, and the dead row its predecessor left in the membership table does not make its leases look
    /// abandoned. Leases taken without an incarnation fall back to the name.
    /// </remarks>
    /// <param name="jobId">The job.</param>
    /// <param name="node">The node's name.</param>
    /// <param name="clusterId">Orleans' cluster id, whose membership says which silos are dead.</param>
    /// <param name="cancellationToken">Stops the query.</param>
    /// <param name="silo">The node's silo incarnation (address:port:generation), or null.</param>
    /// <param name="ahead">
    /// A lease taken ahead, while the node still runs another shard: granted only while more shards wait than there
    /// are active nodes, so that near the end of a job a busy node does not hold a shard an idle one could run.
    /// </param>
    internal async Task<ShardLease?> AcquireAsync(string jobId, string node, string clusterId, CancellationToken cancellationToken, string? silo = null, bool ahead = false)
    {
        using var command = Database.CreateCommand(
            """
            UPDATE inferpool_shards s
            SET state = 'leased', epoch = s.epoch + 1, owner = @node, owner_silo = @silo, lease_expires = now() + make_interval(secs => j.lease_seconds)
            FROM inferpool_jobs j
            WHERE j.id = s.job_id AND j.state = 'running'
              AND (NOT @ahead OR (SELECT count(*) FROM inferpool_shards p WHERE p.job_id = @job AND p.state = 'pending')
                                 > (SELECT count(*) FROM OrleansMembershipTable WHERE DeploymentId = @cluster AND Status = 3))
              AND (s.job_id, s.shard) = (
                SELECT c.job_id, c.shard FROM inferpool_shards c
                WHERE c.job_id = @job AND (c.state = 'pending'
                    OR (c.state = 'leased' AND (c.lease_expires < now()
                        OR (c.owner_silo IS NOT NULL AND c.owner_silo IN (
                            SELECT Address || ':' || Port || ':' || Generation FROM OrleansMembershipTable WHERE DeploymentId = @cluster AND Status = 6))
                        OR (c.owner_silo IS NULL AND c.owner IN (
                            SELECT SiloName FROM OrleansMembershipTable WHERE DeploymentId = @cluster AND Status = 6)))))
                ORDER BY c.shard LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING s.job_id, s.shard, s.first_index, s.count, s.epoch, j.lease_seconds
            """);
        command.Parameters.AddWithValue("job", jobId);
        command.Parameters.AddWithValue("node", node);
        command.Parameters.AddWithValue("silo", (object?)silo ?? DBNull.Value);
        command.Parameters.AddWithValue("cluster", clusterId);
        command.Parameters.AddWithValue("ahead", ahead);
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
        using var command = HeldShardUpdate("state = 'pending', owner = NULL, owner_silo = NULL, lease_expires = NULL", lease, node);
        if (await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) != 1)
        {
            return false;
        }

        await NotifyAsync(ClusterSignals.WorkChannel, "", cancellationToken).ConfigureAwait(false);
        return true;
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
        AddLease(command, lease);
        command.Parameters.AddWithValue("node", node);
        return command;
    }

    /// <summary>
    /// Commits a shard's results in one transaction that first flips the shard to done, only if the lease's epoch
    /// is still the shard's. Returns false (and writes nothing) for a stale lease.
    /// </summary>
    /// <exception cref="ShardFailedException">The results do not account for every item of the shard exactly once.</exception>
    internal async Task<bool> CommitAsync(ShardLease lease, string node, IReadOnlyList<ClusterResult> results, CancellationToken cancellationToken)
    {
        CheckAccountsForEveryItem(lease, results);
        var failed = results.Count(r => !r.Ok);
        using var connection = await Database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        using (var flip = new NpgsqlCommand(
            """
            UPDATE inferpool_shards SET state = 'done', done_at = now(), ok_count = @ok, failed_count = @failed
            WHERE job_id = @job AND shard = @shard AND epoch = @epoch AND state = 'leased'
            """,
            connection,
            transaction))
        {
            AddLease(flip, lease);
            flip.Parameters.AddWithValue("ok", results.Count - failed);
            flip.Parameters.AddWithValue("failed", failed);
            if (await flip.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) != 1)
            {
                await transaction.RollbackAsync(cancellationToken).ConfigureAwait(false);
                return false;
            }
        }

        var import = await connection.BeginBinaryImportAsync(
            "COPY inferpool_results (job_id, key, item_index, status, error, vector, node, device, shard, epoch, outputs, json) FROM STDIN (FORMAT BINARY)",
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
                await WriteNullableAsync(import, r.Outputs is { Count: > 0 } outputs ? TensorCodec.Encode(outputs) : null, NpgsqlDbType.Bytea, cancellationToken).ConfigureAwait(false);
                await WriteNullableAsync(import, r.Json, NpgsqlDbType.Text, cancellationToken).ConfigureAwait(false);
            }

            await import.CompleteAsync(cancellationToken).ConfigureAwait(false);
        }

        await NotifyAsync(connection, transaction, ClusterSignals.ProgressChannel, lease.JobId, cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);

        // The last shard in marks the job done, in a statement of its own after the commit: of two last shards
        // committed at once, the one whose check runs second sees both done. (Inside the commit it would need the
        // job's row lock, which serialises every commit of the job and deadlocks with the results' foreign key.)
        using var done = Database.CreateCommand(
            """
            UPDATE inferpool_jobs j SET state = 'done'
            WHERE j.id = @job AND j.state = 'running' AND NOT EXISTS (SELECT 1 FROM inferpool_shards s WHERE s.job_id = j.id AND s.state <> 'done')
            """);
        done.Parameters.AddWithValue("job", lease.JobId);
        try
        {
            await done.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException)
        {
            // The shard is committed; the job's state is only a label (progress counts the shards), set by the next check.
        }

        return true;
    }

    /// <summary>The parameters that name the shard a lease holds, under its epoch: <c>@job</c>, <c>@shard</c>, <c>@epoch</c>.</summary>
    private static void AddLease(NpgsqlCommand command, ShardLease lease)
    {
        command.Parameters.AddWithValue("job", lease.JobId);
        command.Parameters.AddWithValue("shard", lease.Shard);
        command.Parameters.AddWithValue("epoch", lease.Epoch);
    }

    /// <summary>Marks a running job failed with the reason, in the caller's transaction.</summary>
    private static async Task FailJobAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string jobId, string reason, CancellationToken cancellationToken)
    {
        using var job = new NpgsqlCommand("UPDATE inferpool_jobs SET state = 'failed', error = @reason WHERE id = @job AND state = 'running'", connection, transaction);
        job.Parameters.AddWithValue("job", jobId);
        job.Parameters.AddWithValue("reason", reason);
        await job.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static void CheckAccountsForEveryItem(ShardLease lease, IReadOnlyList<ClusterResult> results)
    {
        var seen = new bool[lease.Count];
        foreach (var r in results)
        {
            var offset = r.Index - lease.First;
            if (offset < 0 || offset >= lease.Count || seen[offset])
            {
                throw new ShardFailedException($"its results do not account for each of its {lease.Count} items exactly once (item {r.Index}, key '{r.Key}', is {(offset < 0 || offset >= lease.Count ? "outside the shard" : "there twice")})");
            }

            seen[offset] = true;
        }

        if (results.Count != lease.Count)
        {
            throw new ShardFailedException($"it has results for {results.Count} of its {lease.Count} items (item {lease.First + Array.IndexOf(seen, false)} has none): the input changed or could not be read whole");
        }
    }

    /// <summary>A job's progress, or null for an unknown job.</summary>
    /// <param name="jobId">The job.</param>
    /// <param name="cancellationToken">Stops the query.</param>
    public async Task<JobProgress?> ProgressAsync(string jobId, CancellationToken cancellationToken = default)
    {
        using var command = Database.CreateCommand(
            """
            SELECT j.id, j.state, j.total_items, c.shards, c.done, c.leased,
                   -- Counters written at commit: O(shards), not a scan of the results. Shards committed before
                   -- the counters existed (schema 2) are counted from the results.
                   CASE WHEN c.uncounted = 0 THEN c.ok + c.failed
                        ELSE (SELECT count(*) FROM inferpool_results r WHERE r.job_id = j.id) END,
                   CASE WHEN c.uncounted = 0 THEN c.failed
                        ELSE (SELECT count(*) FROM inferpool_results r WHERE r.job_id = j.id AND r.status = 'failed') END,
                   j.error
            FROM inferpool_jobs j, LATERAL (
                SELECT count(*)::integer AS shards,
                       count(*) FILTER (WHERE s.state = 'done')::integer AS done,
                       count(*) FILTER (WHERE s.state = 'leased')::integer AS leased,
                       count(*) FILTER (WHERE s.state = 'done' AND s.ok_count IS NULL) AS uncounted,
                       coalesce(sum(s.ok_count), 0)::bigint AS ok,
                       coalesce(sum(s.failed_count), 0)::bigint AS failed
                FROM inferpool_shards s WHERE s.job_id = j.id) c
            WHERE j.id = @id
            """);
        command.Parameters.AddWithValue("id", jobId);
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false)
            ? new JobProgress(
                reader.GetString(0), reader.GetString(1), reader.GetInt32(3), reader.GetInt32(4), reader.GetInt32(5), reader.GetInt64(2), reader.GetInt64(6), reader.GetInt64(7),
                reader.IsDBNull(8) ? null : reader.GetString(8))
            : null;
    }

    /// <summary>Records a job's output columns, once (the first node to load its model).</summary>
    internal async Task RecordColumnsAsync(string jobId, string columns, CancellationToken cancellationToken)
    {
        using var command = Database.CreateCommand("UPDATE inferpool_jobs SET columns = @columns WHERE id = @job AND columns IS NULL");
        command.Parameters.AddWithValue("job", jobId);
        command.Parameters.AddWithValue("columns", columns);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A job as stored, or null for an unknown one.</summary>
    /// <param name="jobId">The job.</param>
    /// <param name="cancellationToken">Stops the query.</param>
    public Task<ClusterJob?> JobAsync(string jobId, CancellationToken cancellationToken = default) => GetJobAsync(jobId, cancellationToken);

    /// <summary>
    /// A job's committed results in item order, those with an index of <paramref name="fromIndex"/> or more, at most
    /// <paramref name="limit"/>: page through them by passing the last index + 1.
    /// </summary>
    /// <param name="jobId">The job.</param>
    /// <param name="fromIndex">The first item index wanted.</param>
    /// <param name="limit">Most rows returned.</param>
    /// <param name="cancellationToken">Stops the query.</param>
    public async Task<IReadOnlyList<CommittedResult>> ResultsAsync(string jobId, long fromIndex, int limit, CancellationToken cancellationToken = default)
    {
        using var command = Database.CreateCommand(
            "SELECT key, item_index, status, error, vector, node, device, outputs, json FROM inferpool_results WHERE job_id = @job AND item_index >= @from ORDER BY item_index LIMIT @limit");
        command.Parameters.AddWithValue("job", jobId);
        command.Parameters.AddWithValue("from", fromIndex);
        command.Parameters.AddWithValue("limit", limit);
        var rows = new List<CommittedResult>(Math.Min(limit, 100_000));
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            rows.Add(new CommittedResult(
                reader.GetString(0),
                reader.GetInt64(1),
                reader.GetString(2) == "ok",
                reader.IsDBNull(3) ? null : reader.GetString(3),
                reader.IsDBNull(4) ? null : reader.GetFieldValue<float[]>(4),
                reader.GetString(5),
                reader.IsDBNull(6) ? null : reader.GetString(6))
            {
                Outputs = reader.IsDBNull(7) ? null : TensorCodec.Decode(reader.GetFieldValue<byte[]>(7)),
                Json = reader.IsDBNull(8) ? null : reader.GetString(8),
            });
        }

        return rows;
    }

    /// <summary>What a job's nodes are doing now, and its rate over the last minute (from the counters kept at commit).</summary>
    /// <param name="jobId">The job.</param>
    /// <param name="cancellationToken">Stops the query.</param>
    public async Task<JobActivity> ActivityAsync(string jobId, CancellationToken cancellationToken = default)
    {
        long recent;
        using (var rate = Database.CreateCommand(
            "SELECT coalesce(sum(ok_count + failed_count), 0)::bigint FROM inferpool_shards WHERE job_id = @job AND state = 'done' AND done_at > now() - interval '60 seconds'"))
        {
            rate.Parameters.AddWithValue("job", jobId);
            recent = (long)(await rate.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        }

        var leases = new List<(string, int, long, int)>();
        using var command = Database.CreateCommand("SELECT owner, shard, first_index, count FROM inferpool_shards WHERE job_id = @job AND state = 'leased' ORDER BY lease_expires, shard");
        command.Parameters.AddWithValue("job", jobId);
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            leases.Add((reader.IsDBNull(0) ? "?" : reader.GetString(0), reader.GetInt32(1), reader.GetInt64(2), reader.GetInt32(3)));
        }

        return new JobActivity(recent, leases);
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
        if (await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) != 1)
        {
            return false;
        }

        await NotifyAsync(ClusterSignals.ProgressChannel, jobId, cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>Tells the listeners on <paramref name="channel"/> (<see cref="ClusterSignals"/>) when the caller's transaction commits, or at once without one.</summary>
    private static async Task NotifyAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, string channel, string payload, CancellationToken cancellationToken)
    {
        using var notify = new NpgsqlCommand("SELECT pg_notify(@channel, @payload)", connection, transaction);
        notify.Parameters.AddWithValue("channel", channel);
        notify.Parameters.AddWithValue("payload", payload);
        await notify.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Tells the listeners on <paramref name="channel"/> (<see cref="ClusterSignals"/>) of a change already made.</summary>
    private async Task NotifyAsync(string channel, string payload, CancellationToken cancellationToken)
    {
        using var connection = await Database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await NotifyAsync(connection, null, channel, payload, cancellationToken).ConfigureAwait(false);
    }

    private static ClusterJob ReadJob(NpgsqlDataReader reader) =>
        new(reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetInt32(3), reader.GetInt32(4), reader.GetInt64(5), reader.GetInt32(6), reader.GetString(7), reader.IsDBNull(8) ? null : reader.GetString(8))
        {
            InputSize = reader.IsDBNull(9) ? null : reader.GetInt64(9),
            InputModified = reader.IsDBNull(10) ? null : reader.GetDateTime(10),
            Error = reader.IsDBNull(11) ? null : reader.GetString(11),
            Columns = reader.IsDBNull(12) ? null : reader.GetString(12),
            Engine = ClusterEngineOptions.Parse(reader.IsDBNull(13) ? null : reader.GetString(13)),
        };

    private static Task WriteNullableAsync<T>(NpgsqlBinaryImporter import, T? value, NpgsqlDbType type, CancellationToken cancellationToken)
        where T : class =>
        value is null ? import.WriteNullAsync(cancellationToken) : import.WriteAsync(value, type, cancellationToken);

    private static Task WriteNullableValueAsync<T>(NpgsqlBinaryImporter import, T? value, NpgsqlDbType type, CancellationToken cancellationToken)
        where T : struct =>
        value is { } v ? import.WriteAsync(v, type, cancellationToken) : import.WriteNullAsync(cancellationToken);
}
