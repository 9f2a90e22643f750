using InferPool.Devices;
using InferPool.Images;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Parts;

namespace InferPool.Jobs;

/// <summary>Everything a job needs. Only the input, the engine and the output folder are required.</summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>option</term><description>default</description></listheader>
/// <item><term><see cref="Plan"/></term><description>null: every device the machine offers (<see cref="JobDefaults.Plan"/>)</description></item>
/// <item><term><see cref="BatchSize"/></term><description>null: <see cref="JobDefaults.Batch(ReplicaPlan, JobEngine)"/> for the plan and the engine</description></item>
/// <item><term><see cref="IntraOpThreads"/></term><description>null: the cores shared out among the CPU replicas</description></item>
/// <item><term><see cref="Format"/></term><description><see cref="OutputFormat.Parquet"/></description></item>
/// <item><term><see cref="PrepareWorkers"/></term><description>null: the core count</description></item>
/// <item><term><see cref="BatchTimeout"/></term><description><see cref="JobDefaults.BatchTimeout"/> (5 minutes)</description></item>
/// <item><term><see cref="MaxPixels"/></term><description><see cref="ImagePreprocessor.DefaultMaxPixels"/></description></item>
/// <item><term><see cref="RowsPerPart"/></term><description><see cref="JobDefaults.RowsPerPart"/></description></item>
/// <item><term><see cref="Force"/>, <see cref="RequireResume"/>, <see cref="FailFast"/></term><description>false: resume an unfinished job of the same identity, else start one</description></item>
/// <item><term><see cref="DuplicateKeys"/></term><description><see cref="Inputs.DuplicateKeys.Fail"/></description></item>
/// <item><term><see cref="GpuTelemetry"/></term><description>null: GPU utilisation is not sampled</description></item>
/// <item><term><see cref="GpuHeadroom"/></term><description><see cref="JobDefaults.GpuHeadroom"/></description></item>
/// </list>
/// </remarks>
public sealed record JobOptions
{
    /// <summary>The inputs.</summary>
    public required InputSource Input { get; init; }

    /// <summary>What runs the items.</summary>
    public required JobEngine Engine { get; init; }

    /// <summary>The output folder: parts and the job journal.</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>Replicas per device, or null for every device with its default replicas.</summary>
    public ReplicaPlan? Plan { get; init; }

    /// <summary>The most items per model call, or null for the default; never more than the model takes.</summary>
    public int? BatchSize { get; init; }

    /// <summary>Threads per CPU replica, or null for the default.</summary>
    public int? IntraOpThreads { get; init; }

    /// <summary>How parts are encoded.</summary>
    public OutputFormat Format { get; init; } = OutputFormat.Parquet;

    /// <summary>
    /// The most preparation workers (image decoding, tokenizing) that run at once, or null for the core count; as many
    /// run as keep the replicas fed (see <see cref="InferencePoolOptions.PrepareParallelism"/>).
    /// </summary>
    public int? PrepareWorkers { get; init; }

    /// <summary>A model call taking longer is treated as hung.</summary>
    public TimeSpan BatchTimeout { get; init; } = JobDefaults.BatchTimeout;

    /// <summary>Images with more pixels are refused from their header.</summary>
    public long MaxPixels { get; init; } = ImagePreprocessor.DefaultMaxPixels;

    /// <summary>Rows per output part.</summary>
    public int RowsPerPart { get; init; } = JobDefaults.RowsPerPart;

    /// <summary>Start over: remove the journal and parts in the output folder first.</summary>
    public bool Force { get; init; }

    /// <summary>Fail unless the output folder holds an unfinished job to resume.</summary>
    public bool RequireResume { get; init; }

    /// <summary>Stop taking input at the first failed item; what is in flight finishes and is committed.</summary>
    public bool FailFast { get; init; }

    /// <summary>What to do with an item whose key an earlier item already has.</summary>
    public DuplicateKeys DuplicateKeys { get; init; } = DuplicateKeys.Fail;

    /// <summary>Reads GPU utilisation and memory while the job runs, and caps replicas per GPU by memory; null for none.</summary>
    public IGpuTelemetry? GpuTelemetry { get; init; }

    /// <summary>Share of each GPU's memory to keep free when capping replicas by memory.</summary>
    public double GpuHeadroom { get; init; } = JobDefaults.GpuHeadroom;
}
