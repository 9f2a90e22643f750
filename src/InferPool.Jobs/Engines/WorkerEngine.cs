using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using InferPool.Devices;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Parts;
using InferPool.Processes;
using InferPool.Results;
using Microsoft.Extensions.Logging;

namespace InferPool.Jobs.Engines;

/// <summary>
/// A worker command (any language, <c>docs/worker-protocol.md</c>), one process per replica. Each item is sent as
/// the input's absolute path, or as its JSONL record (a relative <c>path</c> in it made absolute). Outputs are kept
/// as numbers (nested arrays flattened) in column <c>output</c>, or as JSON text.
/// </summary>
/// <param name="command">The shell command that starts one worker.</param>
/// <param name="jsonOutput">Keep each output as JSON text instead of requiring numbers.</param>
/// <param name="threads">Threads each worker process should use, its share of the cores (<see cref="WorkerOptions.ThreadEnvironment"/>).</param>
public sealed class WorkerEngine(string command, bool jsonOutput, int threads) : JobEngine
{
    private readonly Lazy<string> _fingerprint = new(() => FingerprintOf(command));
    /// <summary>The shell command that starts one worker.</summary>
    public string Command { get; } = !string.IsNullOrWhiteSpace(command) ? command : throw new ArgumentException("A worker needs a command.", nameof(command));

    /// <summary>True when outputs are kept as JSON text.</summary>
    public bool JsonOutput { get; } = jsonOutput;

    /// <summary>Threads each worker process should use.</summary>
    public int Threads { get; } = threads >= 1 ? threads : throw new ArgumentOutOfRangeException(nameof(threads), threads, "A worker needs at least 1 thread.");

    /// <inheritdoc/>
    public override string Name => $"worker '{Command}'";

    /// <summary>This process's GPUs with their UUIDs, to pin workers to; null to ask NVML when a session opens.</summary>
    public IReadOnlyList<GpuInfo>? Gpus { get; init; }

    /// <summary>How long a worker may take to load its model and say hello.</summary>
    public TimeSpan StartTimeout { get; init; } = WorkerOptions.DefaultStartTimeout;

    /// <summary>CPU workers share one loaded model, forked from a loader (<see cref="WorkerOptions.Prefork"/>).</summary>
    public bool Prefork { get; init; }

    /// <summary>
    /// The SHA-256 of the command line and of every file it names that exists (the script, and weights given as
    /// <c>--weights FILE</c> or <c>--weights=FILE</c>), so that editing the script or replacing the weights makes
    /// another job, as a changed model file does. Files the command reaches only indirectly are not covered.
    /// </summary>
    public override string Fingerprint => _fingerprint.Value;

    /// <summary>The files the command names that exist, as <see cref="Fingerprint"/> hashes them.</summary>
    public IReadOnlyList<string> FingerprintFiles => NamedFiles(Command);

    /// <summary>
    /// Items per call to a worker when no batch size is given and the job runs on the CPU only. More than the one
    /// item an in-process model gets on the CPU, because each call crosses a process boundary and a Python call's
    /// own overhead, and because frameworks allocate per call: with the PyTorch sample on 2 cores, batches of 4 ran
    /// 300 images at 29 img/s against 17 at batch 1 (system time 1 s against 9 s). With a GPU,
    /// <see cref="JobDefaults.GpuBatch"/> applies; a worker's hello can still lower either.
    /// </summary>
    public const int CpuBatch = 4;

    /// <inheritdoc/>
    public override int? DefaultBatchSize(Devices.ReplicaPlan plan) =>
        plan is not null && plan.Devices.All(d => !d.Device.IsGpu) ? CpuBatch : null;

    /// <inheritdoc/>
    public override IReadOnlyList<OutputColumn> Columns => [new OutputColumn("output", JsonOutput)];

    /// <inheritdoc/>
    public override string Describe() =>
        $"one process per replica, {Threads} thread(s) each; resuming checks {(FingerprintFiles.Count == 0 ? "the command line only" : $"the command line and {string.Join(", ", FingerprintFiles.Select(Path.GetFileName))}")}";

    /// <inheritdoc/>
    public override EngineSession OpenSession(EngineSessionOptions options, ILogger logger)
    {
        var factory = new WorkerReplicaFactory(
            new WorkerOptions
            {
                Command = Command,
                Environment = WorkerOptions.ThreadEnvironment(Threads),
                StartTimeout = StartTimeout,
                Prefork = Prefork,
                Gpus = Gpus ?? NvmlDeviceInventory.Discover().GpuDetails,
            },
            logger);
        return new PooledSession<WorkerInput, JsonElement>(
            factory,
            ToWorkerInput,
            null,
            ToRow,
            () => [.. factory.Workers.Select(w => new ReplicaUsage(w.Replica, $"pid {w.ProcessId}", w.ResidentBytes))],
            options?.KeepReplicas ?? false);
    }

    private static string FingerprintOf(string command)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes(command));
        foreach (var file in NamedFiles(command))
        {
            hash.AppendData(Encoding.UTF8.GetBytes($"\n{file}\n"));
            using var stream = File.OpenRead(file);
            hash.AppendData(SHA256.HashData(stream));
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>The words of a command line (split on blanks, quotes respected) that name existing files, with <c>--opt=FILE</c> read as FILE.</summary>
    private static List<string> NamedFiles(string command)
    {
        var files = new List<string>();
        foreach (var word in Words(command))
        {
            var candidate = word.StartsWith('-') && word.Contains('=', StringComparison.Ordinal) ? word[(word.IndexOf('=', StringComparison.Ordinal) + 1)..] : word;
            if (candidate.Length > 0 && File.Exists(candidate))
            {
                files.Add(Path.GetFullPath(candidate));
            }
        }

        return files;
    }

    private static IEnumerable<string> Words(string command)
    {
        var word = new StringBuilder();
        char? quote = null;
        foreach (var c in command)
        {
            if (quote is null && char.IsWhiteSpace(c))
            {
                if (word.Length > 0)
                {
                    yield return word.ToString();
                    word.Clear();
                }
            }
            else if (quote is null && c is '"' or '\'')
            {
                quote = c;
            }
            else if (c == quote)
            {
                quote = null;
            }
            else
            {
                word.Append(c);
            }
        }

        if (word.Length > 0)
        {
            yield return word.ToString();
        }
    }

    /// <summary>What a worker is sent for an item: its whole record, or its path as a JSON string.</summary>
    /// <exception cref="InvalidDataException">The item has neither.</exception>
    internal static WorkerInput ToWorkerInput(InputItem item) =>
        new(item.Key, item.Record ?? JsonSerializer.SerializeToElement(item.Path ?? throw new InvalidDataException($"'{item.Key}' has no path to send to the worker."), JobsJson.Default.String));

    private ResultRow ToRow(InferenceResult<InputItem, JsonElement> result)
    {
        if (!result.IsSuccess)
        {
            return PooledSession<WorkerInput, JsonElement>.Row(result, (IReadOnlyList<float[]>?)null);
        }

        if (JsonOutput)
        {
            return PooledSession<WorkerInput, JsonElement>.Row(result, (IReadOnlyList<float[]>?)null, result.Value.GetRawText());
        }

        if (TryVector(result.Value, out var vector, out var error))
        {
            return PooledSession<WorkerInput, JsonElement>.Row(result, [vector]);
        }

        return PooledSession<WorkerInput, JsonElement>.Row(result, (IReadOnlyList<float[]>?)null) with { Ok = false, Error = error, ErrorType = "InvalidOutput" };
    }

    /// <summary>A worker's output as a vector: a number, or arrays of numbers at any depth, flattened in order.</summary>
    internal static bool TryVector(JsonElement output, out float[] vector, out string error)
    {
        var values = new List<float>();
        if (TryFlatten(output, values))
        {
            (vector, error) = ([.. values], "");
            return true;
        }

        var text = output.GetRawText();
        (vector, error) = ([], $"InvalidOutput: the worker's output is not a number or an array of numbers: {(text.Length <= 120 ? text : text[..120] + "…")} (a job that keeps outputs as JSON stores any JSON)");
        return false;
    }

    private static bool TryFlatten(JsonElement value, List<float> into)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.Number:
                into.Add(value.GetSingle());
                return true;
            case JsonValueKind.Array:
                foreach (var element in value.EnumerateArray())
                {
                    if (!TryFlatten(element, into))
                    {
                        return false;
                    }
                }

                return true;
            default:
                return false;
        }
    }
}
