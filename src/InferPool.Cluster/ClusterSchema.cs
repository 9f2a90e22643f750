using Npgsql;

namespace InferPool.Cluster;

/// <summary>
/// The PostgreSQL schema of a cluster, applied by every node and client on start, idempotently and under an
/// advisory lock (three nodes starting at once apply it once). Two parts:
/// <list type="bullet">
/// <item>what Orleans' ADO.NET clustering (10.x) reads and writes: the <c>OrleansQuery</c> table of named
/// queries, the membership version table and the membership table. The Orleans packages do not ship these
/// scripts; the queries below are this project's own, written to the contract Orleans expects (its parameter
/// names, its result column names, a positive first column for success), each one a single statement so that a
/// failed optimistic-concurrency check changes nothing;</item>
/// <item>InferPool's jobs, shards (with their lease epoch) and results.</item>
/// </list>
/// </summary>
internal static class ClusterSchema
{
    /// <summary>Bumped when the schema changes; recorded in <c>inferpool_schema</c>.</summary>
    public const int Version = 4;

    private const long MigrationLock = 0x1F_E2_E0_01;

    private const string Tables = """
        CREATE TABLE IF NOT EXISTS inferpool_schema (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now());

        CREATE TABLE IF NOT EXISTS OrleansQuery (
            QueryKey varchar(64) PRIMARY KEY,
            QueryText varchar(8000) NOT NULL);

        CREATE TABLE IF NOT EXISTS OrleansMembershipVersionTable (
            DeploymentId varchar(150) PRIMARY KEY,
            Timestamp timestamptz(3) NOT NULL DEFAULT now(),
            Version integer NOT NULL DEFAULT 0);

        CREATE TABLE IF NOT EXISTS OrleansMembershipTable (
            DeploymentId varchar(150) NOT NULL REFERENCES OrleansMembershipVersionTable (DeploymentId),
            Address varchar(45) NOT NULL,
            Port integer NOT NULL,
            Generation integer NOT NULL,
            SiloName varchar(150) NOT NULL,
            HostName varchar(150) NOT NULL,
            Status integer NOT NULL,
            ProxyPort integer NULL,
            SuspectTimes varchar(8000) NULL,
            StartTime timestamptz(3) NOT NULL,
            IAmAliveTime timestamptz(3) NOT NULL,
            PRIMARY KEY (DeploymentId, Address, Port, Generation));

        CREATE TABLE IF NOT EXISTS inferpool_jobs (
            id text PRIMARY KEY,
            input text NOT NULL,
            model text NOT NULL,
            batch integer NOT NULL,
            shard_size integer NOT NULL,
            total_items bigint NOT NULL,
            lease_seconds integer NOT NULL,
            state text NOT NULL DEFAULT 'running',
            created timestamptz NOT NULL DEFAULT now());

        CREATE TABLE IF NOT EXISTS inferpool_shards (
            job_id text NOT NULL REFERENCES inferpool_jobs (id) ON DELETE CASCADE,
            shard integer NOT NULL,
            first_index bigint NOT NULL,
            count integer NOT NULL,
            state text NOT NULL DEFAULT 'pending',
            epoch bigint NOT NULL DEFAULT 0,
            owner text NULL,
            lease_expires timestamptz NULL,
            done_at timestamptz NULL,
            PRIMARY KEY (job_id, shard));

        CREATE TABLE IF NOT EXISTS inferpool_results (
            job_id text NOT NULL REFERENCES inferpool_jobs (id) ON DELETE CASCADE,
            key text NOT NULL,
            item_index bigint NOT NULL,
            status text NOT NULL,
            error text NULL,
            vector real[] NULL,
            node text NOT NULL,
            device text NULL,
            shard integer NOT NULL,
            epoch bigint NOT NULL,
            committed timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job_id, key));

        ALTER TABLE inferpool_jobs ADD COLUMN IF NOT EXISTS worker text NULL;

        -- Version 3: the manifest (a job's items fixed at submit), counters kept at commit, loud failures, and lease
        -- owners told apart by silo incarnation (a node restarted under its name is not its dead predecessor).
        CREATE TABLE IF NOT EXISTS inferpool_manifest (
            job_id text NOT NULL REFERENCES inferpool_jobs (id) ON DELETE CASCADE,
            item_index bigint NOT NULL,
            key text NOT NULL,
            path text NULL,
            size bigint NULL,
            modified timestamptz NULL,
            PRIMARY KEY (job_id, item_index));

        ALTER TABLE inferpool_jobs ADD COLUMN IF NOT EXISTS input_size bigint NULL;
        ALTER TABLE inferpool_jobs ADD COLUMN IF NOT EXISTS input_modified timestamptz NULL;
        ALTER TABLE inferpool_jobs ADD COLUMN IF NOT EXISTS error text NULL;
        ALTER TABLE inferpool_shards ADD COLUMN IF NOT EXISTS owner_silo text NULL;
        ALTER TABLE inferpool_shards ADD COLUMN IF NOT EXISTS ok_count integer NULL;
        ALTER TABLE inferpool_shards ADD COLUMN IF NOT EXISTS failed_count integer NULL;
        ALTER TABLE inferpool_shards ADD COLUMN IF NOT EXISTS error text NULL;
        ALTER TABLE inferpool_shards ADD COLUMN IF NOT EXISTS problems integer NOT NULL DEFAULT 0;
        CREATE INDEX IF NOT EXISTS inferpool_shards_open ON inferpool_shards (job_id, shard) WHERE state <> 'done';
        CREATE INDEX IF NOT EXISTS inferpool_results_order ON inferpool_results (job_id, item_index);
        ALTER TABLE inferpool_results ADD COLUMN IF NOT EXISTS outputs bytea NULL;
        ALTER TABLE inferpool_results ADD COLUMN IF NOT EXISTS json text NULL;
        ALTER TABLE inferpool_jobs ADD COLUMN IF NOT EXISTS columns text NULL;
        ALTER TABLE inferpool_manifest ADD COLUMN IF NOT EXISTS record_offset bigint NULL;
        ALTER TABLE inferpool_manifest ADD COLUMN IF NOT EXISTS lines_before bigint NULL;

        -- Version 4: what the nodes need besides the model (a text model's tokenizer, a table's columns), as JSON.
        ALTER TABLE inferpool_jobs ADD COLUMN IF NOT EXISTS engine text NULL;

        CREATE TABLE IF NOT EXISTS inferpool_refusals (
            job_id text NOT NULL REFERENCES inferpool_jobs (id) ON DELETE CASCADE,
            node text NOT NULL,
            reason text NOT NULL,
            at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job_id, node));
        """;

    /// <summary>Orleans' named queries: key, then text. Parameters and result columns follow Orleans' contract.</summary>
    private static readonly (string Key, string Text)[] OrleansQueries =
    [
        ("UpdateIAmAlivetimeKey", """
            UPDATE OrleansMembershipTable SET IAmAliveTime = @IAmAliveTime
            WHERE DeploymentId = @DeploymentId AND Address = @Address AND Port = @Port AND Generation = @Generation
            """),
        ("InsertMembershipVersionKey", """
            WITH added AS (
                INSERT INTO OrleansMembershipVersionTable (DeploymentId) VALUES (@DeploymentId)
                ON CONFLICT (DeploymentId) DO NOTHING RETURNING 1)
            SELECT count(*)::integer FROM added
            """),
        ("InsertMembershipKey", """
            WITH current AS (
                SELECT DeploymentId FROM OrleansMembershipVersionTable
                WHERE DeploymentId = @DeploymentId AND Version = @Version FOR UPDATE),
            added AS (
                INSERT INTO OrleansMembershipTable (DeploymentId, Address, Port, Generation, SiloName, HostName, Status, ProxyPort, StartTime, IAmAliveTime)
                SELECT DeploymentId, @Address, @Port, @Generation, @SiloName, @HostName, @Status, @ProxyPort, @StartTime, @IAmAliveTime FROM current
                ON CONFLICT (DeploymentId, Address, Port, Generation) DO NOTHING
                RETURNING DeploymentId),
            bumped AS (
                UPDATE OrleansMembershipVersionTable v SET Version = v.Version + 1, Timestamp = now()
                FROM added WHERE v.DeploymentId = added.DeploymentId RETURNING 1)
            SELECT count(*)::integer FROM bumped
            """),
        ("UpdateMembershipKey", """
            WITH current AS (
                SELECT DeploymentId FROM OrleansMembershipVersionTable
                WHERE DeploymentId = @DeploymentId AND Version = @Version FOR UPDATE),
            changed AS (
                UPDATE OrleansMembershipTable m SET Status = @Status, SuspectTimes = @SuspectTimes, IAmAliveTime = @IAmAliveTime
                FROM current
                WHERE m.DeploymentId = current.DeploymentId AND m.Address = @Address AND m.Port = @Port AND m.Generation = @Generation
                RETURNING m.DeploymentId),
            bumped AS (
                UPDATE OrleansMembershipVersionTable v SET Version = v.Version + 1, Timestamp = now()
                FROM (SELECT DISTINCT DeploymentId FROM changed) c WHERE v.DeploymentId = c.DeploymentId RETURNING 1)
            SELECT count(*)::integer FROM bumped
            """),
        ("MembershipReadRowKey", """
            SELECT v.DeploymentId, m.Address, m.Port, m.Generation, m.SiloName, m.HostName, m.Status, m.ProxyPort,
                   m.SuspectTimes, m.StartTime, m.IAmAliveTime, v.Version
            FROM OrleansMembershipVersionTable v
            LEFT JOIN OrleansMembershipTable m ON m.DeploymentId = v.DeploymentId
                 AND m.Address = @Address AND m.Port = @Port AND m.Generation = @Generation
            WHERE v.DeploymentId = @DeploymentId
            """),
        ("MembershipReadAllKey", """
            SELECT v.DeploymentId, m.Address, m.Port, m.Generation, m.SiloName, m.HostName, m.Status, m.ProxyPort,
                   m.SuspectTimes, m.StartTime, m.IAmAliveTime, v.Version
            FROM OrleansMembershipVersionTable v
            LEFT JOIN OrleansMembershipTable m ON m.DeploymentId = v.DeploymentId
            WHERE v.DeploymentId = @DeploymentId
            """),
        ("DeleteMembershipTableEntriesKey", """
            DELETE FROM OrleansMembershipTable WHERE DeploymentId = @DeploymentId;
            DELETE FROM OrleansMembershipVersionTable WHERE DeploymentId = @DeploymentId
            """),
        ("GatewaysQueryKey", """
            SELECT Address, ProxyPort, Generation FROM OrleansMembershipTable
            WHERE DeploymentId = @DeploymentId AND Status = @Status AND ProxyPort > 0
            """),
        ("CleanupDefunctSiloEntriesKey", """
            DELETE FROM OrleansMembershipTable
            WHERE DeploymentId = @DeploymentId AND IAmAliveTime < @IAmAliveTime AND Status <> 3
            """),
    ];

    /// <summary>
    /// Creates what is missing and (re)writes Orleans' queries, unless the recorded version is already this one;
    /// safe to run from many processes at once.
    /// </summary>
    public static async Task EnsureAsync(NpgsqlDataSource database, CancellationToken cancellationToken)
    {
        using var connection = await database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        using (var lockCommand = new NpgsqlCommand("SELECT pg_advisory_xact_lock(@lock)", connection, transaction))
        {
            lockCommand.Parameters.AddWithValue("lock", MigrationLock);
            await lockCommand.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        // Already at this version: nothing to create, so a role without DDL rights (docs/cluster-roles.sql) gets here too.
        using (var exists = new NpgsqlCommand("SELECT to_regclass('inferpool_schema') IS NOT NULL", connection, transaction))
        {
            if ((bool)(await exists.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!)
            {
                using var current = new NpgsqlCommand("SELECT coalesce(max(version), 0) FROM inferpool_schema", connection, transaction);
                if ((int)(await current.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))! >= Version)
                {
                    await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                    return;
                }
            }
        }

        using (var create = new NpgsqlCommand(Tables, connection, transaction))
        {
            await create.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        foreach (var (key, text) in OrleansQueries)
        {
            using var upsert = new NpgsqlCommand(
                "INSERT INTO OrleansQuery (QueryKey, QueryText) VALUES (@key, @text) ON CONFLICT (QueryKey) DO UPDATE SET QueryText = EXCLUDED.QueryText",
                connection,
                transaction);
            upsert.Parameters.AddWithValue("key", key);
            upsert.Parameters.AddWithValue("text", text);
            await upsert.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        using (var record = new NpgsqlCommand("INSERT INTO inferpool_schema (version) VALUES (@v) ON CONFLICT DO NOTHING", connection, transaction))
        {
            record.Parameters.AddWithValue("v", Version);
            await record.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }
}
