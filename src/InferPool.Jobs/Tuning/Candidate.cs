using InferPool.Devices;
using InferPool.Jobs.Engines;
using InferPool.Results;

namespace InferPool.Jobs.Tuning;

/// <summary>One configuration to try: replicas per device, intra-op threads per CPU replica, batch size.</summary>
/// <param name="Plan">Replicas per device.</param>
/// <param name="Threads">Intra-op threads per CPU replica.</param>
/// <param name="Batch">Most items per model call.</param>
public sealed record Candidate(ReplicaPlan Plan, int Threads, int Batch)
{
    private static readonly int[] GpuReplicaChoices = [1, 2, 4];

    /// <summary>Prepare workers (decoding) beside the replicas; null for the job's default, one per core.</summary>
    public int? PrepareWorkers { get; init; }

    /// <summary>CPU replicas × threads each is more than the cores: the threads fight over them.</summary>
    /// <param name="cores">The machine's cores.</param>
    public bool Oversubscribed(int cores) => Plan.Devices.Where(d => !d.Device.IsGpu).Sum(d => d.Replicas) * Threads > cores;

    /// <summary>The plan as a --devices value with every count written out (<c>cpu=1</c>, not <c>cpu</c>), so it reads back exactly.</summary>
    public string Devices => string.Join(',', Plan.Devices.Select(d => $"{d.Device}={d.Replicas}"));

    /// <summary>The configuration in words, e.g. <c>cpu=2, 1 thread(s), batch 4</c>.</summary>
    public override string ToString() => $"{Plan}, {Threads} thread(s), batch {Batch}{(PrepareWorkers is { } p ? $", {p} prepare worker(s)" : "")}";

    /// <summary>Pool options for this configuration, with the pool's own in-flight bound, as a job uses it.</summary>
    /// <param name="order">Result order.</param>
    /// <param name="time">The clock, or null for the system clock.</param>
    public InferencePoolOptions PoolOptions(ResultOrder order, TimeProvider? time = null) => new()
    {
        Replicas = Plan,
        MaxBatchSize = Batch,
        PrepareParallelism = PrepareWorkers ?? Environment.ProcessorCount,
        Order = order,
        TimeProvider = time ?? TimeProvider.System,
    };

    /// <summary>What a job uses when nothing is tuned: the devices with their default replicas, threads and batch (<see cref="JobDefaults"/>).</summary>
    /// <param name="inventory">The machine's devices.</param>
    /// <param name="maxModelBatch">The most items the model takes per call, or null.</param>
    /// <param name="devices">Which devices, as a devices spec (<c>auto</c>: every device).</param>
    /// <exception cref="FormatException"><paramref name="devices"/> cannot be read.</exception>
    public static Candidate Defaults(IDeviceInventory inventory, int? maxModelBatch, string devices = "auto")
    {
        ArgumentNullException.ThrowIfNull(inventory);
        var plan = JobDefaults.Plan(inventory, devices);
        return new Candidate(plan, JobDefaults.ThreadsPerReplica(plan, inventory.CpuCores), JobDefaults.Batch(plan, maxModelBatch));
    }

    /// <summary>
    /// What a job with <paramref name="engine"/> uses when nothing is tuned: as <see cref="Defaults(IDeviceInventory, int?, string)"/>,
    /// with the batch <see cref="InferenceJob"/> chooses for the engine (<see cref="JobDefaults.Batch(ReplicaPlan, JobEngine)"/>).
    /// </summary>
    /// <param name="inventory">The machine's devices.</param>
    /// <param name="engine">The job's engine.</param>
    /// <param name="devices">Which devices, as a devices spec (<c>auto</c>: every device).</param>
    /// <exception cref="FormatException"><paramref name="devices"/> cannot be read.</exception>
    public static Candidate Defaults(IDeviceInventory inventory, JobEngine engine, string devices = "auto")
    {
        ArgumentNullException.ThrowIfNull(engine);
        var defaults = Defaults(inventory, engine.MaxBatchSize, devices);
        return defaults with { Batch = JobDefaults.Batch(defaults.Plan, engine) };
    }

    /// <summary>The configuration a tuned config saved.</summary>
    /// <param name="config">The tuned config.</param>
    /// <param name="inventory">The machine's devices.</param>
    public static Candidate From(TunedConfig config, IDeviceInventory inventory)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new Candidate(DeviceSpec.Parse(config.Devices).Resolve(inventory), config.Threads, config.Batch) { PrepareWorkers = config.PrepareWorkers };
    }

    /// <summary>
    /// The configurations worth trying for a selection of devices. On the CPU: every split of the cores into
    /// replicas × threads (1 × all, 2 × half, …, all × 1) plus one oversubscribed split (all × 2), each at batch 1
    /// and, when the model batches, a small batch. On GPUs (the CPU then keeps its plan): 1, 2 and 4 replicas
    /// per GPU at two batch sizes, at most <paramref name="gpuReplicaCap"/> replicas per GPU.
    /// </summary>
    /// <param name="selection">The devices to tune for.</param>
    /// <param name="cores">The machine's cores.</param>
    /// <param name="maxModelBatch">The most items the model takes per call, or null.</param>
    /// <param name="gpuReplicaCap">The most replicas to try per GPU.</param>
    /// <param name="batches">The batch sizes to try instead of the defaults (a text model's windows), or null.</param>
    public static IReadOnlyList<Candidate> For(ReplicaPlan selection, int cores, int? maxModelBatch, int gpuReplicaCap = int.MaxValue, IReadOnlyList<int>? batches = null)
    {
        ArgumentNullException.ThrowIfNull(selection);
        var canBatch = maxModelBatch is null or > 1;
        var gpus = selection.Devices.Where(d => d.Device.IsGpu).ToList();
        var candidates = new List<Candidate>();
        if (gpus.Count == 0)
        {
            var splits = new SortedSet<int>();
            for (var replicas = 1; replicas <= cores; replicas *= 2)
            {
                splits.Add(replicas);
            }

            splits.Add(cores);
            IReadOnlyList<int> cpuBatches = !canBatch ? [1] : batches ?? [1, 4];
            foreach (var replicas in splits)
            {
                foreach (var batch in cpuBatches)
                {
                    candidates.Add(new Candidate(ReplicaPlan.Cpu(replicas), Math.Max(1, cores / replicas), batch));
                }
            }

            if (cores > 1)
            {
                candidates.Add(new Candidate(ReplicaPlan.Cpu(cores), 2, cpuBatches[0]));
            }

            return candidates;
        }

        var cpu = selection.Devices.Where(d => !d.Device.IsGpu).ToList();
        var cpuThreads = cpu.Count == 0 ? 1 : Math.Max(1, cores / cpu.Sum(d => d.Replicas));
        IReadOnlyList<int> gpuBatches = !canBatch ? [1] : batches ?? [8, 32];
        foreach (var replicas in GpuReplicaChoices.Where(r => r <= gpuReplicaCap).DefaultIfEmpty(1))
        {
            foreach (var batch in gpuBatches)
            {
                var plan = ReplicaPlan.Create([.. gpus.Select(g => g with { Replicas = replicas }), .. cpu]);
                candidates.Add(new Candidate(plan, cpuThreads, Math.Min(batch, maxModelBatch ?? batch)));
            }
        }

        return candidates;
    }
}
