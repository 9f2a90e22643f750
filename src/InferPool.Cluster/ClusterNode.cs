using System.Globalization;
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
/// <param name="Poll">How long an idle node waits before it looks for work again, unless the database signals new work sooner.</param>
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
internal sealed partial class ClusterNode(ClusterStore store, ClusterSignals signals, IGrainFactory grains, ClusterNodeOptions options, ILocalSiloDetails silo, ILogger<ClusterNode> logger) : BackgroundService
{
    /// <summary>Hand-backs of one shard by nodes that cannot read its input, after which it fails the job.</summary>
    private const int MaxUnreadable = 3;

    /// <summary>This node's incarnation as Orleans' membership table records it: a restart under the same name is another one.</summary>
    private readonly string _incarnation = $"{silo.SiloAddress.Endpoint.Address}:{silo.SiloAddress.Endpoint.Port}:{silo.SiloAddress.Generation}";

    /// <summary>The replicas of the job this node ran last, kept for its next shard (and for the next job that runs the same model file).</summary>
    private LoadedJob? _loaded;
    private readonly HashSet<string> _refused = new(StringComparer.Ordinal);

    private int _committed;

    /// <summary>The commit of the last shard run, which goes on while the next one is leased and run.</summary>
    private Task _commitInFlight = Task.CompletedTask;

    /// <summary>The next shard, leased while the current one ran.</summary>
    private HeldLease? _next;

    /// <summary>Shards this node committed (for tests and logs).</summary>
    public int Committed => Volatile.Read(ref _committed);

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
                // Taken before looking, so that a job submitted while this node looks wakes it at once.
                var work = signals.Next();
                if (!await TryWorkAsync(stoppingToken, drain.Token).ConfigureAwait(false))
                {
                    await ClusterSignals.WaitAsync(work, options.Poll, stoppingToken).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping between shards.
        }
        finally
        {
            // A shard leased ahead and not started goes back at once; the last shard's commit lands (or, past the
            // drain time, the shard is handed back) before the node goes.
            if (_next is { } unstarted)
            {
                _next = null;
                await GiveBackUnstartedAsync(unstarted).ConfigureAwait(false);
            }

            await _commitInFlight.ConfigureAwait(false);
            if (_loaded is { } loaded)
            {
                await loaded.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Takes and runs one shard of the oldest running job that has one free; false when there was none.</summary>
    private async Task<bool> TryWorkAsync(CancellationToken stoppingToken, CancellationToken drain)
    {
        if (_next is { } prefetched)
        {
            _next = null;
            await RunHeldAsync(prefetched, stoppingToken, drain).ConfigureAwait(false);
            return true;
        }

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
            if (_refused.Contains(job.Id))
            {
                continue;
            }

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
                lease = await coordinator.AcquireAsync(options.Name, _incarnation).WaitAsync(drain).ConfigureAwait(false);
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

            await RunHeldAsync(Hold(job, coordinator, lease, drain), stoppingToken, drain).ConfigureAwait(false);
            return true;
        }

        return false;
    }

    /// <summary>A lease this node holds, its renewal going from the moment it was granted.</summary>
    private sealed record HeldLease(ClusterJob Job, IJobCoordinatorGrain Coordinator, ShardLease Lease, CancellationTokenSource Lost, Task Renewing);

    private HeldLease Hold(ClusterJob job, IJobCoordinatorGrain coordinator, ShardLease lease, CancellationToken drain)
    {
        var lost = CancellationTokenSource.CreateLinkedTokenSource(drain);
        return new HeldLease(job, coordinator, lease, lost, RenewAsync(coordinator, lease, lost, drain));
    }

    /// <summary>
    /// Runs a held shard and, while it runs, leases the next shard of the same job, so that the replicas go on to it
    /// without waiting for a lease call (the next one is renewed while it waits; when the node stops, it is handed back).
    /// </summary>
    private async Task RunHeldAsync(HeldLease held, CancellationToken stoppingToken, CancellationToken drain)
    {
        var prefetch = stoppingToken.IsCancellationRequested ? Task.FromResult<HeldLease?>(null) : PrefetchAsync(held, drain);
        await RunShardAsync(held, drain).ConfigureAwait(false);
        var next = await prefetch.ConfigureAwait(false);
        if (next is not null && _refused.Contains(next.Job.Id))
        {
            // The shard just run found the job's input unreadable here: the one leased ahead goes straight back,
            // plainly (not as a problem with the shard), for a node that can read it. Kept, it would be handed back
            // as unreadable too, and the coordinator, which leases the lowest free shard first, could give the same
            // shard to this node again and again until it failed for good.
            await GiveBackUnstartedAsync(next).ConfigureAwait(false);
            next = null;
        }

        _next = next;
    }

    /// <summary>A shard leased ahead and never started: its renewal stops and it goes back plainly, not as a problem.</summary>
    private async Task GiveBackUnstartedAsync(HeldLease held)
    {
        await StopRenewingAsync(held.Lost, held.Renewing).ConfigureAwait(false);
        await HandBackAsync(held.Lease).ConfigureAwait(false);
    }

    private async Task<HeldLease?> PrefetchAsync(HeldLease current, CancellationToken drain)
    {
        try
        {
            var lease = await current.Coordinator.AcquireAsync(options.Name, _incarnation, ahead: true).WaitAsync(drain).ConfigureAwait(false);
            return lease is null ? null : Hold(current.Job, current.Coordinator, lease, drain);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !drain.IsCancellationRequested)
        {
            LogCoordinatorUnavailable(logger, options.Name, current.Job.Id, ex.Message);
            return null;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    /// <summary>Runs one shard and starts its commit; <paramref name="drain"/> fires when a stopping node's drain time is over.</summary>
    private async Task RunShardAsync(HeldLease held, CancellationToken drain)
    {
        var (job, _, lease, lost, renewing) = held;
        LogShardTaken(logger, options.Name, job.Id, lease.Shard, lease.Epoch, lease.First, lease.Count);
        List<ClusterResult>? results = null;
        try
        {
            results = await ProcessAsync(job, lease, lost.Token).ConfigureAwait(false);
        }
        catch (InputUnreadableException ex)
        {
            await HandBackUnreadableAsync(job, lease, ex.Message).ConfigureAwait(false);
        }
        catch (ShardFailedException ex)
        {
            await FailShardAsync(lease, ex.Message).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (drain.IsCancellationRequested)
        {
            await HandBackAsync(lease).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (lost.IsCancellationRequested)
        {
            LogLeaseLost(logger, options.Name, job.Id, lease.Shard, lease.Epoch);
        }

        if (results is null)
        {
            await StopRenewingAsync(lost, renewing).ConfigureAwait(false);
            return;
        }

        // The commit runs while the next shard is leased and run, so the replicas do not wait on PostgreSQL; the lease
        // is renewed until it lands. One commit at a time: the previous one finishes before this one starts.
        var previous = _commitInFlight;
        _commitInFlight = CommitInBackgroundAsync(job, lease, results, previous, lost, renewing, drain);
    }

    private async Task CommitInBackgroundAsync(
        ClusterJob job, ShardLease lease, List<ClusterResult> results, Task previous, CancellationTokenSource lost, Task renewing, CancellationToken drain)
    {
        try
        {
            await previous.ConfigureAwait(false);
            await CommitAsync(job, lease, results, drain).ConfigureAwait(false);
        }
        finally
        {
            await StopRenewingAsync(lost, renewing).ConfigureAwait(false);
        }
    }

    private static async Task StopRenewingAsync(CancellationTokenSource lost, Task renewing)
    {
        await lost.CancelAsync().ConfigureAwait(false);
        await renewing.ConfigureAwait(false);
        lost.Dispose();
    }

    private async Task CommitAsync(ClusterJob job, ShardLease lease, List<ClusterResult> results, CancellationToken drain)
    {
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
        catch (ShardFailedException ex)
        {
            await FailShardAsync(lease, ex.Message).ConfigureAwait(false);
            return;
        }
        catch (Npgsql.PostgresException ex) when (!ex.IsTransient && ex.SqlState[..2] is "22" or "23" or "42" or "54")
        {
            // The database refused the results themselves (a constraint, a bad value, a limit): committing them again
            // would fail the same way forever. Nothing was committed (one transaction); the shard and the job fail
            // with the database's own reason.
            await FailShardAsync(lease, $"the database refused its results: {ex.SqlState} {ex.MessageText}{(ex.Detail is { } d ? $" ({d})" : "")}").ConfigureAwait(false);
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
            Interlocked.Increment(ref _committed);
            LogShardCommitted(logger, options.Name, job.Id, lease.Shard, lease.Epoch, results.Count);
        }
        else
        {
            LogStaleCommit(logger, options.Name, job.Id, lease.Shard, lease.Epoch);
        }
    }

    /// <summary>Fails the shard and its job with the reason (best effort: if it cannot be recorded, the lease runs out and another node meets the same problem).</summary>
    private async Task FailShardAsync(ShardLease lease, string reason)
    {
        LogShardFailed(logger, options.Name, lease.JobId, lease.Shard, lease.Epoch, reason);
        try
        {
            using var bounded = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await store.FailShardAsync(lease, options.Name, reason, bounded.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException or OperationCanceledException)
        {
            LogDatabaseUnavailable(logger, options.Name, ex.Message);
        }
    }

    /// <summary>This node cannot read the shard's input: it hands the shard back for another node and takes no more of the job.</summary>
    private async Task HandBackUnreadableAsync(ClusterJob job, ShardLease lease, string reason)
    {
        _refused.Add(job.Id);
        LogInputUnreadable(logger, options.Name, job.Id, lease.Shard, reason);
        try
        {
            using var bounded = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            if (await store.HandBackUnreadableAsync(lease, options.Name, reason, NodeHost.ClusterId, MaxUnreadable, bounded.Token).ConfigureAwait(false))
            {
                LogShardFailed(logger, options.Name, lease.JobId, lease.Shard, lease.Epoch, $"no node could read its input ({reason})");
            }
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException or OperationCanceledException)
        {
            LogDatabaseUnavailable(logger, options.Name, ex.Message);
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

    /// <summary>
    /// Runs the shard's items through this node's replicas: the manifest's items, each checked against what the
    /// submitter found (a job without a manifest reads items [First, First + Count) of its input as it is now).
    /// </summary>
    /// <exception cref="InputUnreadableException">This node cannot read the input at all (another node may).</exception>
    /// <exception cref="ShardFailedException">The input changed since the job was submitted.</exception>
    private async Task<List<ClusterResult>> ProcessAsync(ClusterJob job, ShardLease lease, CancellationToken cancellationToken)
    {
        var manifest = await store.ManifestAsync(job.Id, lease.First, lease.Count, cancellationToken).ConfigureAwait(false);
        var failures = new List<ClusterResult>();
        IAsyncEnumerable<InputItem> items;
        LoadedJob loaded;
        try
        {
            // A shard's items (paths, records: small) are read and checked before any work starts, so that a changed
            // or unreadable input stops the shard before its replicas are busy with it.
            items = manifest.Count == 0
                ? job.Engine.OpenInput(job.Input, forWorker: job.Worker is not null).ReadAsync(lease.First, lease.Count, cancellationToken)
                : (await ManifestItemsAsync(job, lease, manifest, failures, cancellationToken).ConfigureAwait(false)).ToAsyncEnumerable();
            loaded = await LoadAsync(job, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException or NotSupportedException or InvalidOperationException)
        {
            // This node cannot load the model or start its replicas: every item of the shard fails with the reason and the node's name.
            return [.. (manifest.Count > 0 ? manifest.Select(m => (m.Index, m.Key)) : Enumerable.Range(0, lease.Count).Select(i => (lease.First + i, $"#{lease.First + i}"))).Select(m => new ClusterResult(
                m.Item2,
                m.Item1,
                false,
                $"{ex.GetType().Name}: node {options.Name} cannot run the job: {ex.Message}",
                null,
                null))];
        }

        var results = new List<ClusterResult>(lease.Count);
        var keys = manifest.Count == 0 ? null : manifest.ToDictionary(m => m.Key, m => m.Index, StringComparer.Ordinal);
        await foreach (var row in loaded.Session.RunAsync(items, loaded.Pool, cancellationToken).ConfigureAwait(false))
        {
            // Every output as it came out (and a worker's JSON); the first output also as a float vector, for SQL.
            var vector = row.Ok && row.Outputs is { Count: > 0 } outputs ? outputs[0].ToFloats() : null;
            var index = keys is null ? lease.First + row.Index : keys[row.Key];
            results.Add(new ClusterResult(row.Key, index, row.Ok, row.Ok ? null : $"{row.Error} (on node {options.Name})", vector, row.Device)
            {
                Outputs = row.Ok ? row.Outputs : null,
                Json = row.Ok ? row.Json : null,
            });
        }

        results.AddRange(failures);
        return results;
    }

    /// <summary>
    /// The shard's items from the manifest. Files (a folder's, a list's) are taken from the manifest, not found by
    /// listing the input again: one that is missing here fails alone, naming this node; one whose size or time
    /// differs from the submitter's changed since, which fails the shard. Records, texts and table rows are read
    /// from the input file, which must be the one submitted, and must give the manifest's keys.
    /// </summary>
    private async Task<List<InputItem>> ManifestItemsAsync(
        ClusterJob job, ShardLease lease, IReadOnlyList<ManifestItem> manifest, List<ClusterResult> failures, CancellationToken cancellationToken)
    {
        if (manifest.Count != lease.Count)
        {
            throw new ShardFailedException($"the manifest holds {manifest.Count} of its {lease.Count} items");
        }

        var items = new List<InputItem>(manifest.Count);
        if (manifest.All(m => m.Path is not null))
        {
            CheckFolderReadable(job, manifest);
            foreach (var m in manifest)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var file = new FileInfo(m.Path!);
                if (!file.Exists)
                {
                    failures.Add(new ClusterResult(m.Key, m.Index, false, $"FileNotFoundException: {m.Path} is not on node {options.Name} (it was there when the job was submitted)", null, null));
                    continue;
                }

                ThrowIfChanged(file, m.Size, m.Modified);

                items.Add(new InputItem { Key = m.Key, Path = m.Path });
            }

            return items;
        }

        InputSource source;
        try
        {
            var info = new FileInfo(job.Input);
            if (!info.Exists)
            {
                throw new InputUnreadableException($"the input {job.Input} is not on node {options.Name}");
            }

            ThrowIfChanged(info, job.InputSize, job.InputModified);

            source = job.Engine.OpenInput(job.Input, forWorker: job.Worker is not null);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new InputUnreadableException($"node {options.Name} may not read the input {job.Input}: {ex.Message}");
        }

        // Read from where the shard's first record starts (the manifest has its byte offset), not from the file's start.
        var records = manifest[0].Position is { } start
            ? source.ReadAsync(lease.First, lease.Count, start, cancellationToken)
            : source.ReadAsync(lease.First, lease.Count, cancellationToken);
        var position = 0;
        await foreach (var item in records.ConfigureAwait(false))
        {
            if (position >= manifest.Count || manifest[position].Key != item.Key)
            {
                throw new ShardFailedException($"item {lease.First + position} of {job.Input} has the key '{item.Key}' where the job was submitted with '{(position < manifest.Count ? manifest[position].Key : "(none)")}': the input changed");
            }

            position++;
            items.Add(item);
        }

        if (position != manifest.Count)
        {
            throw new ShardFailedException($"{job.Input} gave {position} of the shard's {manifest.Count} items: the input changed");
        }

        return items;
    }

    /// <summary>
    /// A file whose size or last write time is not what the submitter found (times compared to the microsecond, as
    /// PostgreSQL keeps them) changed since the job was submitted: the shard fails.
    /// </summary>
    private static void ThrowIfChanged(FileInfo file, long? size, DateTime? modified)
    {
        if ((size is { } s && file.Length != s) || (modified is { } m && file.LastWriteTimeUtc.Ticks / 10 != m.Ticks / 10))
        {
            throw new ShardFailedException($"{file.FullName} changed since the job was submitted (size {size} → {file.Length}, modified {modified:O} → {file.LastWriteTimeUtc:O}); submit the job again to run the new input");
        }
    }

    /// <summary>
    /// A folder that is missing, unreadable or empty on this node while the manifest lists its files (an unmounted
    /// share, a missing permission) is this node's problem, not the items': another node may read it.
    /// </summary>
    private void CheckFolderReadable(ClusterJob job, IReadOnlyList<ManifestItem> manifest)
    {
        var root = Directory.Exists(job.Input) ? job.Input : Path.GetDirectoryName(job.Input);
        try
        {
            if (root is null || !Directory.Exists(root))
            {
                throw new InputUnreadableException($"the input folder {root ?? job.Input} is not on node {options.Name}");
            }

            if (!Directory.EnumerateFileSystemEntries(root).Any() || manifest.All(m => !File.Exists(m.Path)))
            {
                throw new InputUnreadableException($"none of the shard's {manifest.Count} files is on node {options.Name} (the input folder {root} is {(Directory.EnumerateFileSystemEntries(root).Any() ? "there" : "empty")}; an unmounted share?)");
            }
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new InputUnreadableException($"node {options.Name} may not read the input folder {root}: {ex.Message}");
        }
    }

    private async Task<LoadedJob> LoadAsync(ClusterJob job, CancellationToken cancellationToken)
    {
        if (_loaded is { } current && current.JobId == job.Id)
        {
            return current;
        }

        // A warm node keeps its replicas for the next job that runs the same ONNX model file (same size and time) at
        // the same batch size with the same engine options (tokenizer, columns): the sessions depend on nothing else. Worker jobs always start new workers,
        // since a worker's script may have changed between jobs with its command line the same.
        var identity = job.Worker is null ? ModelIdentity(job) : null;
        if (_loaded is { } warm && identity is not null && warm.Identity == identity)
        {
            LogReplicasKept(logger, options.Name, warm.JobId, job.Id);
            _loaded = warm with { JobId = job.Id };
            await RecordColumnsAsync(job, warm.Columns, cancellationToken).ConfigureAwait(false);
            return _loaded;
        }

        // One model at a time on a node: the replicas of the job before go.
        if (_loaded is { } old)
        {
            _loaded = null;
            await old.DisposeAsync().ConfigureAwait(false);
        }

        cancellationToken.ThrowIfCancellationRequested();
        // The same engines as a local job: a worker command, or an ONNX model every node resolves itself.
        JobEngine engine = job.Worker is { } command
            ? new WorkerEngine(command, jsonOutput: job.Model == ClusterJob.WorkerJson, options.Threads ?? WorkerOptions.ThreadsPerWorker(Environment.ProcessorCount, options.Plan.TotalReplicas))
            : job.Engine.LoadEngine(job.Model, logger);
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

        var columns = ClusterColumns.Serialize(engine.Columns);
        _loaded = new LoadedJob(job.Id, identity, session, pool, columns);
        await RecordColumnsAsync(job, columns, cancellationToken).ConfigureAwait(false);
        return _loaded;
    }

    /// <summary>What an ONNX or text job's replicas depend on: the model file as it is now (path, size, time), the batch size and the engine options.</summary>
    private static string ModelIdentity(ClusterJob job)
    {
        var file = new FileInfo(job.Engine.Text ? TextEngine.ModelPath(job.Model) : ModelChoice.Resolve(job.Model).Path);
        return string.Create(CultureInfo.InvariantCulture, $"{file.FullName}|{(file.Exists ? file.Length : -1)}|{(file.Exists ? file.LastWriteTimeUtc.Ticks : 0)}|{job.Batch}|{job.Engine.Identity()}");
    }

    /// <summary>What an export of the job writes: the columns a local run of its engine writes (the first node to load it records them).</summary>
    private async Task RecordColumnsAsync(ClusterJob job, string columns, CancellationToken cancellationToken)
    {
        try
        {
            await store.RecordColumnsAsync(job.Id, columns, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException)
        {
            LogDatabaseUnavailable(logger, options.Name, ex.Message); // another node, or this one's next load, records them
        }
    }

    /// <summary>The replicas this node runs a job on: built at the job's first shard and kept for its next ones, and for a next job of the same model.</summary>
    private sealed record LoadedJob(string JobId, string? Identity, EngineSession Session, InferencePoolOptions Pool, string Columns) : IAsyncDisposable
    {
        public ValueTask DisposeAsync() => Session.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Node}: keeps the replicas of {Previous} for {Job}: the same model file at the same batch size")]
    private static partial void LogReplicasKept(ILogger logger, string node, string previous, string job);

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

    [LoggerMessage(Level = LogLevel.Error, Message = "{Node}: shard {Shard} of {Job} (epoch {Epoch}) failed, and the job with it: {Reason}")]
    private static partial void LogShardFailed(ILogger logger, string node, string job, int shard, long epoch, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "{Node}: cannot read the input of {Job} (shard {Shard}): {Reason}; handed the shard back for another node and takes no more of this job")]
    private static partial void LogInputUnreadable(ILogger logger, string node, string job, int shard, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Node}: the database is not reachable ({Reason}); trying again")]
    private static partial void LogDatabaseUnavailable(ILogger logger, string node, string reason);
}

/// <summary>This node cannot read a job's input at all (missing, unreadable, empty here): another node may.</summary>
internal sealed class InputUnreadableException(string message) : Exception(message);
