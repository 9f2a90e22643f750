using System.Text.Json;
using InferPool.Cli.Inputs;
using InferPool.Cli.Jobs;
using InferPool.Cli.Models;
using InferPool.Cli.Tuning;
using InferPool.Devices;
using InferPool.Onnx;
using InferPool.Processes;
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
        LoadedJob loaded;
        IAsyncEnumerable<(InputItem Item, long Index)> items;
        try
        {
            loaded = await LoadAsync(job, cancellationToken).ConfigureAwait(false);
            items = InputSource.Open(job.Input, forWorker: job.Worker is not null).ReadAsync().Select((item, i) => (item, (long)i)).Skip((int)lease.First).Take(lease.Count);
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

        return await loaded.RunAsync(items, options.Name, cancellationToken).ConfigureAwait(false);
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
        loaded = job.Worker is { } command
            ? await WorkerJob.LoadAsync(command, job.Batch, options, logger, cancellationToken).ConfigureAwait(false)
            : await OnnxJob.LoadAsync(job, options, logger, cancellationToken).ConfigureAwait(false);
        _loaded[job.Id] = loaded;
        return loaded;
    }

    /// <summary>A job's replicas on this node, built once and kept between its shards.</summary>
    private abstract class LoadedJob : IAsyncDisposable
    {
        public abstract Task<List<ClusterResult>> RunAsync(IAsyncEnumerable<(InputItem Item, long Index)> items, string node, CancellationToken cancellationToken);

        public abstract ValueTask DisposeAsync();

        /// <summary>Runs the items through prebuilt replicas in input order, turning each result into a row.</summary>
        protected static async Task<List<ClusterResult>> RunAsync<TPrepared, TOutput>(
            IAsyncEnumerable<(InputItem Item, long Index)> items,
            Func<InputItem, TPrepared> prepare,
            PrebuiltReplicas<TPrepared, TOutput> replicas,
            Candidate candidate,
            Func<TOutput, (float[]? Vector, string? Error)> toVector,
            string node,
            CancellationToken cancellationToken)
        {
            replicas.Reset();
            var results = new List<ClusterResult>();
            var stage = new PrepareStage<(InputItem Item, long Index), TPrepared>((entry, _) => ValueTask.FromResult(prepare(entry.Item)));
            await foreach (var r in InferencePool.RunAsync(items, stage, replicas, candidate.PoolOptions(ResultOrder.Input), cancellationToken).ConfigureAwait(false))
            {
                var (vector, error) = r.IsSuccess ? toVector(r.Value!) : (null, r.Error!.ToString());
                results.Add(new ClusterResult(r.Item.Item.Key, r.Item.Index, vector is not null, vector is null ? $"{error} (on node {node})" : null, vector, r.Device?.ToString()));
            }

            return results;
        }
    }

    private sealed class OnnxJob(OnnxInputs inputs, Candidate candidate, OnnxReplicaFactory factory, PrebuiltReplicas<float[], float[][]> replicas) : LoadedJob
    {
        public static async Task<LoadedJob> LoadAsync(ClusterJob job, ClusterNodeOptions options, ILogger logger, CancellationToken cancellationToken)
        {
            var engine = OnnxEngine.Load(job.Model, logger);
            var batch = Math.Min(job.Batch, engine.Onnx.MaxBatchSize ?? job.Batch);
            var factory = new OnnxReplicaFactory(engine.Onnx, new OnnxReplicaOptions { IntraOpThreads = options.Threads });
            var replicas = await PrebuiltReplicas<float[], float[][]>.BuildAsync(factory, options.Plan, cancellationToken).ConfigureAwait(false);
            return new OnnxJob(new OnnxInputs(engine, 100_000_000), new Candidate(options.Plan, options.Threads ?? 0, batch), factory, replicas);
        }

        public override Task<List<ClusterResult>> RunAsync(IAsyncEnumerable<(InputItem Item, long Index)> items, string node, CancellationToken cancellationToken) =>
            RunAsync(items, inputs.Prepare, replicas, candidate, outputs => (outputs[0], null), node, cancellationToken);

        public override async ValueTask DisposeAsync()
        {
            await replicas.DisposeAsync().ConfigureAwait(false);
            factory.Dispose();
        }
    }

    /// <summary>A worker command's processes on this node: items sent as paths or whole records, numeric outputs kept as the vector.</summary>
    private sealed class WorkerJob(Candidate candidate, PrebuiltReplicas<WorkerInput, JsonElement> replicas) : LoadedJob
    {
        public static async Task<LoadedJob> LoadAsync(string command, int batch, ClusterNodeOptions options, ILogger logger, CancellationToken cancellationToken)
        {
            var threads = (options.Threads ?? Math.Max(1, Environment.ProcessorCount / options.Plan.TotalReplicas)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            var factory = new WorkerReplicaFactory(
                new WorkerOptions
                {
                    Command = command,
                    Environment = new Dictionary<string, string>(StringComparer.Ordinal) { ["OMP_NUM_THREADS"] = threads, ["INFERPOOL_THREADS"] = threads },
                },
                logger);
            var replicas = await PrebuiltReplicas<WorkerInput, JsonElement>.BuildAsync(factory, options.Plan, cancellationToken).ConfigureAwait(false);
            return new WorkerJob(new Candidate(options.Plan, 0, batch), replicas);
        }

        public override Task<List<ClusterResult>> RunAsync(IAsyncEnumerable<(InputItem Item, long Index)> items, string node, CancellationToken cancellationToken) =>
            RunAsync(items, InferenceJob.ToWorkerInput, replicas, candidate, Vector, node, cancellationToken);

        public override ValueTask DisposeAsync() => replicas.DisposeAsync();

        private static (float[]? Vector, string? Error) Vector(JsonElement output) =>
            InferenceJob.TryVector(output, out var vector, out var error) ? (vector, null) : (null, error);
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
