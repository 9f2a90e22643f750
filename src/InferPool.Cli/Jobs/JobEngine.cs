using System.Security.Cryptography;
using System.Text;
using InferPool.Cli.Models;
using InferPool.Cli.Output;
using InferPool.Onnx;

namespace InferPool.Cli.Jobs;

/// <summary>What runs a job's items: ONNX Runtime sessions in this process, or external worker processes.</summary>
internal abstract record JobEngine
{
    /// <summary>The model's name in summaries and in the job journal.</summary>
    public abstract string Name { get; }

    /// <summary>What must match for a run to resume another: the model file's SHA-256, or the worker command's.</summary>
    public abstract string Fingerprint { get; }

    /// <summary>The output columns between <c>error</c> and <c>device</c>.</summary>
    public abstract IReadOnlyList<OutputColumn> Columns { get; }
}

/// <summary>A model run by ONNX Runtime in this process, on image files or tensor records.</summary>
internal sealed record OnnxEngine(ModelChoice Model, OnnxModel Onnx) : JobEngine
{
    public override string Name => Model.Name;

    public override string Fingerprint => Onnx.Sha256;

    public override IReadOnlyList<OutputColumn> Columns { get; } = [.. Onnx.Outputs.Select(o => new OutputColumn(Model.ColumnFor(o.Name)))];

    /// <summary>Resolves <paramref name="model"/> (<c>resnet18</c> or a path) and loads it, checking its batch dimension.</summary>
    public static OnnxEngine Load(string model, Microsoft.Extensions.Logging.ILogger logger)
    {
        var choice = ModelChoice.Resolve(model);
        return new OnnxEngine(choice, OnnxModel.Load(choice.Path, logger));
    }
}

/// <summary>
/// A worker command (any language, docs/worker-protocol.md), one process per replica. Each item is sent as
/// the input's absolute path, or as its JSONL record (a relative <c>path</c> in it made absolute).
/// </summary>
/// <param name="Command">The shell command that starts one worker.</param>
/// <param name="JsonOutput">Keep each output as JSON text (column <c>output (json)</c>) instead of requiring numbers (column <c>output</c>, a float list).</param>
/// <param name="Threads">Threads each worker process should use, its share of the cores (<c>OMP_NUM_THREADS</c>, <c>INFERPOOL_THREADS</c>).</param>
internal sealed record WorkerEngine(string Command, bool JsonOutput, int Threads) : JobEngine
{
    public override string Name => $"worker '{Command}'";

    public override string Fingerprint => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Command)));

    public override IReadOnlyList<OutputColumn> Columns => [new OutputColumn("output", JsonOutput)];
}
