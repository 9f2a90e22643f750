using InferPool.Devices;

namespace InferPool.Jobs;

/// <summary>
/// The one owner of a job's defaults: replicas per device, threads, batch size, rows per part and the hung-batch
/// timeout. Commands, tuning, benchmarks and cluster nodes all take them from here. The in-flight bound is the
/// pool's own (<see cref="InferencePoolOptions.EffectiveMaxInFlight"/>) and the image size limit the preparation's
/// (<see cref="Images.ImagePreprocessor.DefaultMaxPixels"/>).
/// </summary>
public static class JobDefaults
{
    /// <summary>Replicas per GPU: two, so one loads its batch while the other computes; capped by memory at run time.</summary>
    public const int GpuReplicas = 2;

    /// <summary>Batch size on the CPU, where batching does not pay (ResNet-18 on 2 cores, as tuning measured it: batch 4 42.0 img/s, batch 1 41.6).</summary>
    public const int CpuBatch = 1;

    /// <summary>Batch size when a GPU is used.</summary>
    public const int GpuBatch = 32;

    /// <summary>Rows per output part.</summary>
    public const int RowsPerPart = 1_000;

    /// <summary>The fraction of each GPU's memory kept free when capping replicas by memory.</summary>
    public const double GpuHeadroom = 0.10;

    /// <summary>A model call taking longer than this many seconds is treated as hung: its replica is rebuilt and the batch retried.</summary>
    public const double BatchTimeoutSeconds = 300;

    /// <summary>After a stop is asked for, how many seconds the items in flight may take to finish and be committed.</summary>
    public const double DrainTimeoutSeconds = 30;

    /// <summary><see cref="BatchTimeoutSeconds"/> as a time span.</summary>
    public static TimeSpan BatchTimeout { get; } = TimeSpan.FromSeconds(BatchTimeoutSeconds);

    /// <summary>
    /// CPU replicas when none are given: one single-threaded session per core on small machines, where it beats one
    /// session with all cores (measured on 2 cores: 2×1 ≈ 35 img/s, 1×2 ≈ 31, 2×2 ≈ 21); two threads per session
    /// above 4 cores, to keep memory in check. Tuning measures instead of guessing.
    /// </summary>
    /// <param name="cores">The machine's cores.</param>
    /// <param name="threads">Threads per replica, or null for the default.</param>
    public static int CpuReplicas(int cores, int? threads)
    {
        var perReplica = threads ?? (cores <= 4 ? 1 : 2);
        return Math.Max(1, cores / Math.Max(1, perReplica));
    }

    /// <summary>Replicas on <paramref name="device"/> when none are given.</summary>
    /// <param name="device">The device.</param>
    /// <param name="cores">The machine's cores.</param>
    /// <param name="threads">Threads per CPU replica, or null for the default.</param>
    public static int Replicas(Device device, int cores, int? threads)
        => device.IsGpu ? GpuReplicas : CpuReplicas(cores, threads);

    /// <summary>Every device <paramref name="inventory"/> offers, each with its default replicas: GPUs when there are any, else the CPU.</summary>
    /// <param name="inventory">The machine's devices (<see cref="NvmlDeviceInventory.Discover"/>).</param>
    /// <param name="devices">Which devices, as <see cref="DeviceSpec.Parse"/> reads them; <c>auto</c> by default.</param>
    /// <param name="replicas">Replicas per device, or null for the defaults.</param>
    /// <param name="threads">Threads per CPU replica, or null for the default.</param>
    /// <exception cref="FormatException"><paramref name="devices"/> cannot be read.</exception>
    public static ReplicaPlan Plan(IDeviceInventory inventory, string devices = "auto", int? replicas = null, int? threads = null)
    {
        ArgumentNullException.ThrowIfNull(inventory);
        return DeviceSpec.Parse(devices).Resolve(inventory, d => replicas ?? Replicas(d, inventory.CpuCores, threads));
    }

    /// <summary>Batch size when none is given: <see cref="CpuBatch"/> on the CPU, <see cref="GpuBatch"/> with a GPU, never more than the model takes.</summary>
    /// <param name="plan">Where the replicas run.</param>
    /// <param name="modelMaxBatch">The most items the model takes per call, or null.</param>
    public static int Batch(ReplicaPlan plan, int? modelMaxBatch = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var batch = plan.Devices.Any(d => d.Device.IsGpu) ? GpuBatch : CpuBatch;
        return Math.Min(batch, modelMaxBatch ?? batch);
    }

    /// <summary>
    /// Batch size when none is given for a job with <paramref name="engine"/>: the engine's own default where it has one (a
    /// text model's window, a worker's), else <see cref="Batch(ReplicaPlan, int?)"/>; never more than the engine takes.
    /// </summary>
    /// <param name="plan">Where the replicas run.</param>
    /// <param name="engine">The job's engine.</param>
    public static int Batch(ReplicaPlan plan, Engines.JobEngine engine)
    {
        ArgumentNullException.ThrowIfNull(engine);
        var batch = engine.DefaultBatchSize(plan) ?? Batch(plan);
        return Math.Min(batch, engine.MaxBatchSize ?? batch);
    }

    /// <summary>Threads per CPU replica when none are given: the cores shared out among the CPU replicas of <paramref name="plan"/>.</summary>
    /// <param name="plan">Where the replicas run.</param>
    /// <param name="cores">The machine's cores.</param>
    public static int ThreadsPerReplica(ReplicaPlan plan, int cores)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var cpuReplicas = plan.Devices.Where(d => !d.Device.IsGpu).Sum(d => d.Replicas);
        return Math.Max(1, cores / Math.Max(1, cpuReplicas));
    }
}
