using System.Collections.Concurrent;
using System.Text.Json;
using InferPool.Devices;
using InferPool.Replicas;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferPool.Processes;

/// <summary>
/// Builds replicas that are external worker processes (any language) speaking the protocol in
/// <c>docs/worker-protocol.md</c>: one process per replica, pinned to its device through the environment.
/// </summary>
public sealed class WorkerReplicaFactory : IReplicaFactory<WorkerInput, JsonElement>
{
    private readonly WorkerOptions _options;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, WorkerInfo> _workers = new(StringComparer.Ordinal);

    // Names this factory's workers as one pool (INFERPOOL_POOL), so that pre-forked replicas share one loader with
    // each other and never with another pool's.
    private readonly string _pool = $"{Environment.ProcessId}-{Guid.NewGuid():N}";

    /// <summary>Creates a factory.</summary>
    /// <exception cref="ArgumentException">The command is empty or a timeout is not positive.</exception>
    public WorkerReplicaFactory(WorkerOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.Command);
        if (options.StartTimeout <= TimeSpan.Zero || options.ShutdownTimeout < TimeSpan.Zero)
        {
            throw new ArgumentException("WorkerOptions.StartTimeout must be positive and ShutdownTimeout zero or more.", nameof(options));
        }

        _options = options;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The latest worker started for each replica slot, with its memory once its model was loaded.</summary>
    public IReadOnlyCollection<WorkerInfo> Workers => [.. _workers.Values.OrderBy(w => w.Replica, StringComparer.Ordinal)];

    /// <inheritdoc />
    public async ValueTask<IReplica<WorkerInput, JsonElement>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(slot);
        var replica = await WorkerReplica.StartAsync(slot, _options, _pool, _logger, cancellationToken).ConfigureAwait(false);
        long? memory;
        if (replica.ServingProcessId is { } serving)
        {
            // A pre-forked replica: its own processes, and the one forked to serve it. The loader it was forked from
            // can sit below the first replica's process, with every forked replica below it: left out, or the first
            // replica would count them all.
            memory = ProcessTree.ResidentBytes(replica.ProcessId, leaveOut: ProcessTree.ParentOf(serving));
            if (ProcessTree.ResidentBytes(serving) is { } served)
            {
                memory = (memory ?? 0) + served;
            }
        }
        else
        {
            memory = ProcessTree.ResidentBytes(replica.ProcessId);
        }

        _workers[slot.Name] = new WorkerInfo(slot.Name, replica.Name, replica.ProcessId, memory);
        return replica;
    }
}
