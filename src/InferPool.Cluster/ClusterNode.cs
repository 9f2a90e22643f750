using InferPool.Devices;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Processes;
using InferPool.Results;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace InferPool.Cluster;

/// <summary>What a node runs with: its name (the silo's), its devices, and how often it looks for work.</summary>
/// <param name="Name">The node's name, unique in the cluster.</param>
/// <param name="Plan">Replicas per device on this node.</param>
/// <param name="Threads">Threads per CPU replica, or null for the cores shared out.</param>
/// <param name="Poll">How long an idle node waits before it looks for work again.</param>
public sealed record ClusterNodeOptions(string Name, ReplicaPlan Plan, int? Threads, TimeSpan Poll)
{
    /// <summary>When the node stops, how long the shard in progress may take to finish and be committed before it is handed back (30 s).</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(Jobs.JobDefaults.DrainTimeoutSeconds);

    /// <summary>
    /// Glob patterns (<c>*</c>, <c>?</c>) over a worker job's whole command line that this node may run. Empty (the
    /// default): the node runs only ONNX models (the built-in one and .onnx paths) and refuses every worker job.
    /// </summary>
    public IReadOnlyList<string> AllowedWorkers { get; init; } = [];
}

/// <summary>
/// The work loop of one node: while a job is running, take a shard lease from the job's coordinator grain, run
/// the shard through the local pool (replicas built once per job and kept between shards), renew the lease while
/// working, and commit the shard's results in one epoch-checked transaction. Long work never runs in a grain.
/// </summary>
internal sealed partial class ClusterNode(ClusterStore store, IGrainFactory grains, ClusterNodeOptions options, ILogger<ClusterNode> logger) : BackgroundService
{
    private readonly Dictionary<string, LoadedJob> _loaded = new(StringComparer.Ordinal);
    private readonly HashSet<string> _refused = new(StringComparer.Ordinal);

    /// <summary>Shards this node committed (for tests and logs).</summary>
    public int Committed { get; private set; }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Stopping (SIGTERM, Ctrl+C, the host stopping) takes no new shard; the shard in progress may finish and be
        // committed within the drain time, after which it is handed back for another node to redo.
        using var drain = new CancellationTokenSource();
        using var drainOnStop = stoppingToken.Register(() => drain.CancelAfter(options.DrainTimeout));
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                if (!await TryWorkAsync(stoppingToken, drain.Token).ConfigureAwait(false))
                {
                    await Task.Delay(options.Poll, stoppingToken).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping between shards.
        }
        finally
        {
            foreach (var job in _loaded.Values)
            {
                await job.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Takes and runs one shard of the oldest running job that has one free; false when there was none.</summary>
    private async Task<bool> TryWorkAsync(CancellationToken stoppingToken, CancellationToken drain)
    {
        IReadOnlyList<ClusterJob> jobs;
        try
        {
            jobs = await store.RunningJobsAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException)
        {
            LogDatabaseUnavailable(logger, options.Name, ex.Message);
            return false;
        }

        foreach (var job in jobs)
        {
            if (job.Worker is { } command && !WorkerPattern.Allows(options.AllowedWorkers, command))
            {
                // The node's operator decides what it runs: a job's command from the database is not enough.
                await RefuseAsync(job, $"worker command '{command}' is not allowed on this node", stoppingToken).ConfigureAwait(false);
                continue;
            }

            var coordinator = grains.GetGrain<IJobCoordinatorGrain>(job.Id);
            ShardLease? lease;
            try
            {
                // Not abandoned when the node starts stopping: a lease granted meanwhile is run and drained like any other.
                lease = await coordinator.AcquireAsync(options.Name).WaitAsync(drain).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !drain.IsCancellationRequested)
            {
                // The coordinator's silo is unreachable (frozen, dying) or the database is: Orleans moves the grain
                // once membership declares that silo dead; until then, try again.
                LogCoordinatorUnavailable(logger, options.Name, job.Id, ex.Message);
                continue;
            }

            if (lease is null)
            {
                continue;
            }

            await RunShardAsync(job, coordinator, lease, drain).ConfigureAwait(false);
            return true;
        }

        return false;
    }

    /// <summary>Runs and commits one shard; <paramref name="drain"/> fires when a stopping node's drain time is over.</summary>
    private async Task RunShardAsync(ClusterJob job, IJobCoordinatorGrain coordinator, ShardLease lease, CancellationToken drain)
    {
        LogShardTaken(logger, options.Name, job.Id, lease.Shard, lease.Epoch, lease.First, lease.Count);
        using var lost = CancellationTokenSource.CreateLinkedTokenSource(drain);
        var renewing = RenewAsync(coordinator, lease, lost, drain);
        List<ClusterResult> results;
        try
        {
            results = await ProcessAsync(job, lease, lost.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (drain.IsCancellationRequested)
        {
            await HandBackAsync(lease).ConfigureAwait(false);
            return;
        }
        catch (OperationCanceledException) when (lost.IsCancellationRequested)
        {
            LogLeaseLost(logger, options.Name, job.Id, lease.Shard, lease.Epoch);
            return;
        }
        finally
        {
            await lost.CancelAsync().ConfigureAwait(false);
            await renewing.ConfigureAwait(false);
        }

        bool committed;
        try
        {
            committed = await store.CommitAsync(lease, options.Name, results, drain).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (drain.IsCancellationRequested)
        {
            // One transaction: nothing was committed.
            await HandBackAsync(lease).ConfigureAwait(false);
            return;
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException)
        {
            // Nothing was committed (one transaction): the lease runs out and the shard is redone.
            LogDatabaseUnavailable(logger, options.Name, ex.Message);
            return;
        }

        if (committed)
        {
            Committed++;
            LogShardCommitted(logger, options.Name, job.Id, lease.Shard, lease.Epoch, results.Count);
        }
        else
        {
            LogStaleCommit(logger, options.Name, job.Id, lease.Shard, lease.Epoch);
        }
    }

    /// <summary>Records the refusal once per job (later polls skip the job quietly); other nodes may still take its shards.</summary>
    private async Task RefuseAsync(ClusterJob job, string reason, CancellationToken cancellationToken)
    {
        if (!_refused.Add(job.Id))
        {
            return;
        }

        LogRefused(logger, options.Name, job.Id, reason);
        try
        {
            await store.RefuseAsync(job.Id, options.Name, reason, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException)
        {
            _refused.Remove(job.Id);
            LogDatabaseUnavailable(logger, options.Name, ex.Message);
        }
    }

    /// <summary>Gives a shard back at once (another node may take it now, not when the lease runs out); best effort.</summary>
    private async Task HandBackAsync(ShardLease lease)
    {
        try
        {
            using var bounded = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            if (await store.ReleaseAsync(lease, options.Name, bounded.Token).ConfigureAwait(false))
            {
                LogHandedBack(logger, options.Name, lease.JobId, lease.Shard, lease.Epoch);
            }
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException or OperationCanceledException)
        {
            // Its lease runs out instead.
            LogDatabaseUnavailable(logger, options.Name, ex.Message);
        }
    }

    /// <summary>Renews the lease a few times per lease period; cancels <paramref name="lost"/> when the shard has moved on.</summary>
    private async Task RenewAsync(IJobCoordinatorGrain coordinator, ShardLease lease, CancellationTokenSource lost, CancellationToken stoppingToken)
    {
        var period = TimeSpan.FromSeconds(Math.Max(0.5, lease.LeaseSeconds / 3.0));
        try
        {
            while (!lost.IsCancellationRequested)
            {
                await Task.Delay(period, lost.Token).ConfigureAwait(false);
                bool renewed;
                try
                {
                    renewed = await coordinator.RenewAsync(lease, options.Name).WaitAsync(lost.Token).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // Cannot tell: keep working; the commit's epoch check decides.
                    LogCoordinatorUnavailable(logger, options.Name, lease.JobId, ex.Message);
                    continue;
                }

                if (!renewed)
                {
                    await lost.CancelAsync().ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The shard finished, the lease was lost, or the node is stopping.
        }
    }

    /// <summary>Runs items [First, First + Count) of the job's input through this node's replicas.</summary>
    private async Task<List<ClusterResult>> ProcessAsync(ClusterJob job, ShardLease lease, CancellationToken cancellationToken)
    {
        LoadedJob loaded;
        IAsyncEnumerable<InputItem> items;
        try
        {
            loaded = await LoadAsync(job, cancellationToken).ConfigureAwait(false);
            items = InputSource.Open(job.Input, forWorker: job.Worker is not null).ReadAsync(lease.First, lease.Count, cancellationToken);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException or NotSupportedException or InvalidOperationException)
        {
            // This node cannot read the input or load the model: every item of the shard fails with the reason and the node's name.
            return [.. Enumerable.Range(0, lease.Count).Select(i => new ClusterResult(
                $"#{lease.First + i}",
                lease.First + i,
                false,
                $"{ex.GetType().Name}: node {options.Name} cannot run the job: {ex.Message}",
                null,
                null))];
        }

        var results = new List<ClusterResult>(lease.Count);
        await foreach (var row in loaded.Session.RunAsync(items, loaded.Pool, cancellationToken).ConfigureAwait(false))
        {
            // The results table holds one vector per item: the model's first output.
            var vector = row.Ok ? row.Outputs?[0].ToFloats() : null;
            results.Add(new ClusterResult(row.Key, lease.First + row.Index, row.Ok, row.Ok ? null : $"{row.Error} (on node {options.Name})", vector, row.Device));
        }

        return results;
    }

    private async Task<LoadedJob> LoadAsync(ClusterJob job, CancellationToken cancellationToken)
    {
        if (_loaded.TryGetValue(job.Id, out var loaded))
        {
            return loaded;
        }

        // One job's model at a time on a node: replicas of finished jobs go.
        foreach (var old in _loaded.Values)
        {
            await old.DisposeAsync().ConfigureAwait(false);
        }

        _loaded.Clear();
        cancellationToken.ThrowIfCancellationRequested();
        // The same engines as a local job: a worker command, or an ONNX model every node resolves itself.
        JobEngine engine = job.Worker is { } command
            ? new WorkerEngine(command, jsonOutput: false, options.Threads ?? WorkerOptions.ThreadsPerWorker(Environment.ProcessorCount, options.Plan.TotalReplicas))
            : OnnxEngine.Load(job.Model, logger);
        var pool = new InferencePoolOptions
        {
            Replicas = options.Plan,
            MaxBatchSize = Math.Min(job.Batch, engine.MaxBatchSize ?? job.Batch),
            PrepareParallelism = Environment.ProcessorCount,
            Order = ResultOrder.Input,
            Logger = logger,
        };
        var session = engine.OpenSession(
            new EngineSessionOptions { IntraOpThreads = options.Threads, KeepReplicas = true, TensorCapacity = EngineSessionOptions.TensorCapacityFor(pool) },
            logger);
        try
        {
            // Replicas are built once per job and kept between its shards; one that cannot start fails this shard.
            await session.StartAsync(options.Plan, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await session.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        loaded = new LoadedJob(session, pool);
        _loaded[job.Id] = loaded;
        return loaded;
    }

    /// <summary>A job's session on this node: replicas built at its first shard and kept for the next ones.</summary>
    private sealed record LoadedJob(EngineSession Session, InferencePoolOptions Pool) : IAsyncDisposable
    {
        public ValueTask DisposeAsync() => Session.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Node}: took shard {Shard} of {Job} (epoch {Epoch}): items {First}+{Count}")]
    private static partial void LogShardTaken(ILogger logger, string node, string job, int shard, long epoch, long first, int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Node}: committed shard {Shard} of {Job} (epoch {Epoch}), {Items} items")]
    private static partial void LogShardCommitted(ILogger logger, string node, string job, int shard, long epoch, int items);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Node}: lost the lease on shard {Shard} of {Job} (epoch {Epoch}); its work is dropped and another node redoes it")]
    private static partial void LogLeaseLost(ILogger logger, string node, string job, int shard, long epoch);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Node}: commit of shard {Shard} of {Job} refused: epoch {Epoch} is stale (the shard was granted again or is done); results discarded")]
    private static partial void LogStaleCommit(ILogger logger, string node, string job, int shard, long epoch);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Node}: the coordinator of {Job} did not answer ({Reason}); trying again")]
    private static partial void LogCoordinatorUnavailable(ILogger logger, string node, string job, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Node}: stopping before shard {Shard} of {Job} (epoch {Epoch}) finished; handed it back for another node")]
    private static partial void LogHandedBack(ILogger logger, string node, string job, int shard, long epoch);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Node}: refused job {Job}: {Reason}; allow it with the node's worker patterns if it should run here")]
    private static partial void LogRefused(ILogger logger, string node, string job, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Node}: the database is not reachable ({Reason}); trying again")]
    private static partial void LogDatabaseUnavailable(ILogger logger, string node, string reason);
}
