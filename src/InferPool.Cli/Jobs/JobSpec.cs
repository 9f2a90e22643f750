using InferPool.Cli.Inputs;
using InferPool.Cli.Output;
using InferPool.Devices;

namespace InferPool.Cli.Jobs;

/// <summary>Everything a run needs, checked and resolved before any work starts.</summary>
internal sealed record JobSpec(
    InputSource Input,
    JobEngine Engine,
    ReplicaPlan Plan,
    int? IntraOpThreads,
    int BatchSize,
    OutputFormat Format,
    string OutputDirectory,
    int PrepareWorkers,
    TimeSpan? BatchTimeout,
    long MaxPixels,
    int RowsPerPart,
    bool Force = false,
    bool RequireResume = false,
    bool FailFast = false,
    string? TunedFrom = null,
    IGpuTelemetry? GpuTelemetry = null,
    double GpuHeadroom = 0.10);
