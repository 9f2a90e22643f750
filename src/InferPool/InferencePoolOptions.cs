using InferPool.Devices;
using InferPool.Diagnostics;
using InferPool.Replicas;
using InferPool.Results;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferPool;

/// <summary>
/// How a job runs. Validated once when the job starts and snapshotted, so changing an instance afterwards
/// does not affect a running job.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>option</term><description>default</description></listheader>
/// <item><term><see cref="Replicas"/></term><description>1 replica on the CPU</description></item>
/// <item><term><see cref="MaxBatchSize"/></term><description>1 (no batching)</description></item>
/// <item><term><see cref="MaxBatchDelay"/></term><description>2 ms</description></item>
/// <item><term><see cref="MaxInFlight"/></term><description>null: 4 × replicas × max batch size, at least 64</description></item>
/// <item><term><see cref="PrepareParallelism"/></term><description><see cref="Environment.ProcessorCount"/></description></item>
/// <item><term><see cref="Order"/></term><description><see cref="ResultOrder.Input"/></description></item>
/// <item><term><see cref="MaxAttempts"/></term><description>3</description></item>
/// <item><term><see cref="BatchTimeout"/></term><description>null: no timeout</description></item>
/// <item><term><see cref="MaxReplicaStartFailures"/></term><description>3</description></item>
/// <item><term><see cref="RestartBackoff"/></term><description>200 ms, doubling to at most 10 s</description></item>
/// <item><term><see cref="DrainTimeout"/></term><description>10 s</description></item>
/// <item><term><see cref="ClassifyFault"/></term><description><see cref="DefaultClassifyFault"/></description></item>
/// <item><term><see cref="TimeProvider"/></term><description><see cref="TimeProvider.System"/></description></item>
/// <item><term><see cref="Logger"/></term><description>none</description></item>
/// <item><term><see cref="Monitor"/></term><description>none</description></item>
/// </list>
/// </remarks>
public sealed class InferencePoolOptions
{
    /// <summary>Devices and replicas per device.</summary>
    public ReplicaPlan Replicas { get; set; } = ReplicaPlan.Cpu(1);

    /// <summary>The most items a replica receives in one call. 1 turns batching off.</summary>
    public int MaxBatchSize { get; set; } = 1;

    /// <summary>
    /// How long a partly filled batch waits for more items before it is sent anyway. Only matters when the
    /// input arrives more slowly than replicas take it.
    /// </summary>
    public TimeSpan MaxBatchDelay { get; set; } = TimeSpan.FromMilliseconds(2);

    /// <summary>
    /// The most items admitted from the input and not yet handed to the caller. This bounds every queue and
    /// the reorder window, so memory does not grow with the input. Null picks 4 × replicas × max batch size,
    /// at least 64.
    /// </summary>
    public int? MaxInFlight { get; set; }

    /// <summary>
    /// The most workers the prepare stage (decode, resize, …), which overlaps inference, runs at once. One runs while the
    /// replicas are built; more join while replicas wait on preparation and park again when it is ahead (the prepared
    /// queue is full), so a CPU-bound job keeps its cores for inference and a preparation-bound one uses them all.
    /// </summary>
    public int PrepareParallelism { get; set; } = Environment.ProcessorCount;

    /// <summary>The order in which results are streamed.</summary>
    public ResultOrder Order { get; set; } = ResultOrder.Input;

    /// <summary>The most attempts an item gets before it is reported failed (see <see cref="FaultKind"/>).</summary>
    public int MaxAttempts { get; set; } = 3;

    /// <summary>
    /// How long one batch call may take before the replica is declared hung, abandoned and rebuilt, and the
    /// batch retried. Null for no timeout.
    /// </summary>
    public TimeSpan? BatchTimeout { get; set; }

    /// <summary>Failed builds in a row after which a replica slot is given up (and its device, with its last slot).</summary>
    public int MaxReplicaStartFailures { get; set; } = 3;

    /// <summary>The wait before the first rebuild of a replica; it doubles per failure in a row, up to 10 s.</summary>
    public TimeSpan RestartBackoff { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// On cancellation, or when a replica is abandoned, how long the pool waits for in-flight calls and
    /// disposals before it leaves them behind. Cancellation never waits longer than this.
    /// </summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Reads GPU memory (e.g. <see cref="NvmlTelemetry"/>). When set, the first replica on each GPU with more than
    /// one planned replica is built and run alone first; what it took caps that GPU's replicas so that
    /// <see cref="GpuMemoryHeadroom"/> stays free (see <see cref="GpuReplicaCap"/>). Null: no capping.
    /// </summary>
    public IGpuTelemetry? GpuTelemetry { get; set; }

    /// <summary>Share of each GPU's memory that replica capping keeps free, from 0 to below 1.</summary>
    public double GpuMemoryHeadroom { get; set; } = 0.10;

    /// <summary>Decides what an exception from a batch call means. Null uses <see cref="DefaultClassifyFault"/>.</summary>
    public Func<Exception, FaultKind>? ClassifyFault { get; set; }

    /// <summary>The clock for delays, timeouts and rates; tests pass a fake one.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Where replica starts, faults and removed devices are logged.</summary>
    public ILogger Logger { get; set; } = NullLogger.Instance;

    /// <summary>Live counters for progress displays; one monitor per job.</summary>
    public PoolMonitor? Monitor { get; set; }

    /// <summary>
    /// The default fault classification: <see cref="OutOfMemoryException"/>, <see cref="DeviceOutOfMemoryException"/> and messages that report a device
    /// allocation failure (<see cref="IsOutOfDeviceMemory"/>) are <see cref="FaultKind.OutOfMemory"/>;
    /// <see cref="ReplicaFaultException"/>, <see cref="TimeoutException"/>,
    /// <see cref="System.Runtime.InteropServices.SEHException"/> and sticky device errors (<see cref="IsStickyDeviceError"/>)
    /// break the replica; everything else is the item's fault.
    /// </summary>
    public static FaultKind DefaultClassifyFault(Exception exception) => exception switch
    {
        OutOfMemoryException or DeviceOutOfMemoryException => FaultKind.OutOfMemory,
        ReplicaFaultException or TimeoutException or System.Runtime.InteropServices.SEHException => FaultKind.Replica,
        _ when IsOutOfDeviceMemory(exception.Message) => FaultKind.OutOfMemory,
        _ when IsStickyDeviceError(exception.Message) => FaultKind.Replica,
        _ => FaultKind.Item,
    };

    /// <summary>
    /// Whether an error message reports a device allocation failure, as ONNX Runtime ("Failed to allocate memory",
    /// "CUDA failure 2: out of memory"), CUDA (<c>CUDA_ERROR_OUT_OF_MEMORY</c>, <c>cudaErrorMemoryAllocation</c>) and
    /// PyTorch ("CUDA out of memory") word it.
    /// </summary>
    public static bool IsOutOfDeviceMemory(string? message) =>
        message is not null
        && (message.Contains("out of memory", StringComparison.OrdinalIgnoreCase)
            || message.Contains("Failed to allocate memory", StringComparison.OrdinalIgnoreCase)
            || message.Contains("CUDA_ERROR_OUT_OF_MEMORY", StringComparison.Ordinal)
            || message.Contains("cudaErrorMemoryAllocation", StringComparison.Ordinal)
            || message.Contains("CUBLAS_STATUS_ALLOC_FAILED", StringComparison.Ordinal)
            || message.Contains("CUDNN_STATUS_ALLOC_FAILED", StringComparison.Ordinal));

    /// <summary>
    /// Whether an error message reports a CUDA error that leaves the device context unusable (an illegal memory
    /// access, CUDA error 700, a launch failure): only a new session or process recovers, so the replica is rebuilt.
    /// </summary>
    public static bool IsStickyDeviceError(string? message) =>
        message is not null
        && (message.Contains("illegal memory access", StringComparison.OrdinalIgnoreCase)
            || message.Contains("CUDA failure 700", StringComparison.Ordinal)
            || message.Contains("cudaErrorIllegalAddress", StringComparison.Ordinal)
            || message.Contains("CUDA_ERROR_ILLEGAL_ADDRESS", StringComparison.Ordinal)
            || message.Contains("unspecified launch failure", StringComparison.OrdinalIgnoreCase));

    /// <summary>The effective in-flight bound for these options.</summary>
    public int EffectiveMaxInFlight => MaxInFlight ?? Math.Max(64, 4 * Replicas.TotalReplicas * MaxBatchSize);

    /// <summary>Checks every value and returns a copy the job can keep.</summary>
    /// <exception cref="ArgumentException">A value is out of range; the message names it and what is allowed.</exception>
    internal InferencePoolOptions ValidateAndSnapshot()
    {
        static void Require(bool ok, string name, object? value, string allowed)
        {
            if (!ok)
            {
                throw new ArgumentException($"InferencePoolOptions.{name} is {value?.ToString() ?? "null"}; it must be {allowed}.", name);
            }
        }

        Require(Replicas is not null, nameof(Replicas), Replicas, "a replica plan");
        Require(MaxBatchSize >= 1, nameof(MaxBatchSize), MaxBatchSize, "at least 1");
        Require(MaxBatchDelay >= TimeSpan.Zero, nameof(MaxBatchDelay), MaxBatchDelay, "zero or more");
        Require(MaxInFlight is null || MaxInFlight >= 1, nameof(MaxInFlight), MaxInFlight, "null or at least 1");
        Require(PrepareParallelism >= 1, nameof(PrepareParallelism), PrepareParallelism, "at least 1");
        Require(GpuMemoryHeadroom is >= 0 and < 1, nameof(GpuMemoryHeadroom), GpuMemoryHeadroom, "from 0 to below 1");
        Require(Enum.IsDefined(Order), nameof(Order), Order, "Input or Completion");
        Require(MaxAttempts >= 1, nameof(MaxAttempts), MaxAttempts, "at least 1");
        Require(BatchTimeout is null || BatchTimeout > TimeSpan.Zero, nameof(BatchTimeout), BatchTimeout, "null or positive");
        Require(MaxReplicaStartFailures >= 1, nameof(MaxReplicaStartFailures), MaxReplicaStartFailures, "at least 1");
        Require(RestartBackoff >= TimeSpan.Zero, nameof(RestartBackoff), RestartBackoff, "zero or more");
        Require(DrainTimeout >= TimeSpan.Zero, nameof(DrainTimeout), DrainTimeout, "zero or more");
        Require(TimeProvider is not null, nameof(TimeProvider), TimeProvider, "a time provider");
        Require(Logger is not null, nameof(Logger), Logger, "a logger");

        var copy = (InferencePoolOptions)MemberwiseClone();
        copy.MaxInFlight = EffectiveMaxInFlight;
        copy.ClassifyFault ??= DefaultClassifyFault;
        return copy;
    }
}
