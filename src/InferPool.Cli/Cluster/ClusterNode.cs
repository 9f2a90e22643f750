using InferPool.Cli.Inputs;
using InferPool.Cli.Jobs;
using InferPool.Cli.Models;
using InferPool.Cli.Tuning;
using InferPool.Devices;
using InferPool.Onnx;
using InferPool.Results;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace InferPool.Cli.Cluster;

/// <summary>What a node runs with: its name (the silo's), its devices, and how often it looks for work.</summary>
internal sealed record ClusterNodeOptions(string Name, ReplicaPlan Plan, int? Threads, TimeSpan Poll);

/// <summary>
/// The work loop of one node: while a job is running, take a shard lease from the job's coordinator grain, run
/// the shard through the local pool (replicas built once per job and kept between shards), renew the lease while
/// working, and commit the shard's results in one epoch-checked transaction. Long work never runs in a grain.
/// </summary>
internal sealed partial class ClusterNode(ClusterStore store, IGrainFactory grains, ClusterNodeOptions options, ILogger<ClusterNode> logger) : BackgroundService
{
    private readonly Dictionary<string, LoadedJob> _loaded = new(StringComparer.Ordinal);

    /// <summary>Shards this node committed (for tests and logs).</summary>
    public int Committed { get; private set; }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                if (!await TryWorkAsync(stoppingToken).ConfigureAwait(false))
                {
                    await Task.Delay(options.Poll, stoppingToken).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping: a shard in progress is not committed; its lease runs out and another node redoes it.
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
    private async Task<bool> TryWorkAsync(CancellationToken stoppingToken)
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
            var coordinator = grains.GetGrain<IJobCoordinatorGrain>(job.Id);
            ShardLease? lease;
            try
            {
                lease = await coordinator.AcquireAsync(options.Name).WaitAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
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

            await RunShardAsync(job, coordinator, lease, stoppingToken).ConfigureAwait(false);
            return true;
        }

        return false;
    }

    private async Task RunShardAsync(ClusterJob job, IJobCoordinatorGrain coordinator, ShardLease lease, CancellationToken stoppingToken)
    {
        LogShardTaken(logger, options.Name, job.Id, lease.Shard, lease.Epoch, lease.First, lease.Count);
        using var lost = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        var renewing = RenewAsync(coordinator, lease, lost, stoppingToken);
        List<ClusterResult> results;
        try
        {
            results = await ProcessAsync(job, lease, lost.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (lost.IsCancellationRequested && !stoppingToken.IsCancellationRequested)
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
            committed = await store.CommitAsync(lease, options.Name, results, stoppingToken).ConfigureAwait(false);
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
        var results = new List<ClusterResult>(lease.Count);
        LoadedJob loaded;
        IAsyncEnumerable<(InputItem Item, long Index)> items;
        try
        {
            loaded = await LoadAsync(job, cancellationToken).ConfigureAwait(false);
            items = InputSource.Open(job.Input).ReadAsync().Select((item, i) => (item, (long)i)).Skip((int)lease.First).Take(lease.Count);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException or NotSupportedException)
        {
            // This node cannot read the input or the model: every item of the shard fails with the reason and the node's name.
            for (var i = lease.First; i < lease.First + lease.Count; i++)
            {
                results.Add(new ClusterResult($"#{i}", i, false, $"{ex.GetType().Name}: node {options.Name} cannot run the job: {ex.Message}", null, null));
            }

            return results;
        }

        loaded.Replicas.Reset();
        var stage = new PrepareStage<(InputItem Item, long Index), float[]>((entry, _) => ValueTask.FromResult(loaded.Inputs.Prepare(entry.Item)));
        var poolOptions = loaded.Candidate.PoolOptions(ResultOrder.Input);
        await foreach (var r in InferencePool.RunAsync(items, stage, loaded.Replicas, poolOptions, cancellationToken).ConfigureAwait(false))
        {
            results.Add(r.IsSuccess
                ? new ClusterResult(r.Item.Item.Key, r.Item.Index, true, null, r.Value![0], r.Device?.ToString())
                : new ClusterResult(r.Item.Item.Key, r.Item.Index, false, $"{r.Error} (on node {options.Name})", null, r.Device?.ToString()));
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
        var model = ModelChoice.Resolve(job.Model);
        var engine = new OnnxEngine(model, OnnxModel.Load(model.Path, logger));
        var batch = Math.Min(job.Batch, engine.Onnx.MaxBatchSize ?? job.Batch);
        var candidate = new Candidate(options.Plan, options.Threads ?? 0, batch);
        var factory = new OnnxReplicaFactory(engine.Onnx, new OnnxReplicaOptions { IntraOpThreads = options.Threads });
        var replicas = await PrebuiltReplicas<float[], float[][]>.BuildAsync(factory, options.Plan, cancellationToken).ConfigureAwait(false);
        loaded = new LoadedJob(new OnnxInputs(engine, 100_000_000), candidate, factory, replicas);
        _loaded[job.Id] = loaded;
        return loaded;
    }

    private sealed record LoadedJob(OnnxInputs Inputs, Candidate Candidate, OnnxReplicaFactory Factory, PrebuiltReplicas<float[], float[][]> Replicas) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await Replicas.DisposeAsync().ConfigureAwait(false);
            Factory.Dispose();
        }
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

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Node}: the database is not reachable ({Reason}); trying again")]
    private static partial void LogDatabaseUnavailable(ILogger logger, string node, string reason);
}
