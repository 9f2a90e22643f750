using InferPool.Jobs.Parts;
using Microsoft.Extensions.Logging;

namespace InferPool.Jobs.Engines;

/// <summary>
/// What runs a job's items: a model in ONNX Runtime in this process (<see cref="OnnxEngine"/>), or external worker
/// processes (<see cref="WorkerEngine"/>). An engine describes the job (its name, fingerprint and output columns)
/// and opens sessions that turn input items into result rows; a local job and a cluster node use the same ones.
/// </summary>
public abstract class JobEngine
{
    /// <summary>The model's name in summaries and in the job journal.</summary>
    public abstract string Name { get; }

    /// <summary>What must match for a run to resume another: the model file's SHA-256, or the worker's.</summary>
    public abstract string Fingerprint { get; }

    /// <summary>The output columns between <c>error</c> and <c>device</c>.</summary>
    public abstract IReadOnlyList<OutputColumn> Columns { get; }

    /// <summary>The most items one model call takes, or null when there is no limit.</summary>
    public virtual int? MaxBatchSize => null;

    /// <summary>
    /// The batch size a job uses when none is given, or null for the defaults (<see cref="JobDefaults"/>). A text engine
    /// asks for more, since its batches are the window it sorts by length.
    /// </summary>
    /// <param name="plan">Where the replicas run.</param>
    public virtual int? DefaultBatchSize(Devices.ReplicaPlan plan) => null;

    /// <summary>What a job's first line says about how items run here (e.g. its batching).</summary>
    public abstract string Describe();

    /// <summary>
    /// Opens a session: the replica factory and the preparation for this engine. Replicas are built when a run
    /// starts (or once, with <see cref="EngineSessionOptions.KeepReplicas"/>).
    /// </summary>
    /// <param name="options">How the session runs.</param>
    /// <param name="logger">Where replica and worker messages go.</param>
    public abstract EngineSession OpenSession(EngineSessionOptions options, ILogger logger);

}
