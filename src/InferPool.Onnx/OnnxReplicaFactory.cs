using System.Collections.Concurrent;
using InferPool.Devices;
using InferPool.Replicas;
using Microsoft.ML.OnnxRuntime;

namespace InferPool.Onnx;

/// <summary>
/// Builds ONNX Runtime replicas: one <see cref="InferenceSession"/> per replica, CPU or CUDA, each on its
/// own thread. The input of an item is its flattened float tensor (the model input's item shape); its
/// output is one flattened float array per model output, in <see cref="OnnxModel.Outputs"/> order.
/// </summary>
/// <remarks>
/// Sessions are built one at a time, with freed heap pages given back after each, so that each replica's
/// resident memory can be measured (<see cref="Replicas"/>); CPU sessions share one pre-packed weights container. Dispose the factory
/// after the job: it owns that container.
/// </remarks>
public sealed class OnnxReplicaFactory : IReplicaFactory<float[], float[][]>, IDisposable
{
    private readonly OnnxModel _model;
    private readonly OnnxReplicaOptions _options;
    private readonly IReplicaFactory<float[], float[][]> _inner;
    private readonly PrePackedWeightsContainer? _prePacked;
    private readonly Lock _buildLock = new();
    private readonly ConcurrentDictionary<string, OnnxReplicaInfo> _replicas = new(StringComparer.Ordinal);

    /// <summary>Creates a factory for a model.</summary>
    /// <param name="model">The checked model.</param>
    /// <param name="options">How sessions are built; null for the defaults.</param>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public OnnxReplicaFactory(OnnxModel model, OnnxReplicaOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        _model = model;
        _options = (options ?? new OnnxReplicaOptions()).Snapshot();
        _prePacked = _options.SharePrePackedWeights ? new PrePackedWeightsContainer() : null;

        _inner = ReplicaFactory.FromBlocking<float[], OnnxSession, float[][]>(CreateSession, static (session, batch, ct) => session.Run(batch, ct));
    }

    /// <summary>The model.</summary>
    public OnnxModel Model => _model;

    /// <summary>Every replica built so far (the latest build of each slot).</summary>
    public IReadOnlyCollection<OnnxReplicaInfo> Replicas => [.. _replicas.Values.OrderBy(r => r.Replica, StringComparer.Ordinal)];

    /// <inheritdoc />
    public ValueTask<IReplica<float[], float[][]>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default) =>
        _inner.CreateAsync(slot, cancellationToken);

    /// <inheritdoc />
    public void Dispose()
    {
        _prePacked?.Dispose();
    }

    private OnnxSession CreateSession(ReplicaSlot slot)
    {
        var threads = slot.Device.IsGpu ? 1 : _options.ThreadsFor(slot.ReplicasOnDevice);
        using var sessionOptions = new SessionOptions
        {
            IntraOpNumThreads = threads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = _options.OptimizationLevel,
        };
        if (slot.Device.IsGpu)
        {
            AddCuda(sessionOptions, slot, _options);
        }

        // One build at a time: builds in parallel parse the model in several threads' heaps at once and
        // leave ~50 MB more per replica resident (measured on ResNet-18), which is the memory this trade
        // is meant to save. A replica starts taking work as soon as it is built, so the others' builds
        // overlap with inference anyway.
        lock (_buildLock)
        {
            ProcessMemory.ReturnFreedMemory();
            var before = ProcessMemory.ResidentBytes();
            var session = _prePacked is not null && !slot.Device.IsGpu
                ? new InferenceSession(_model.SessionBytes, sessionOptions, _prePacked)
                : new InferenceSession(_model.SessionBytes, sessionOptions);
            ProcessMemory.ReturnFreedMemory();
            var grown = Math.Max(0, ProcessMemory.ResidentBytes() - before);
            _replicas[slot.Name] = new OnnxReplicaInfo(slot.Name, threads, grown);
            return new OnnxSession(session, _model);
        }
    }

    private static void AddCuda(SessionOptions options, ReplicaSlot slot, OnnxReplicaOptions replicaOptions)
    {
        var device = slot.Device;
        try
        {
            using var cuda = new OrtCUDAProviderOptions();
            cuda.UpdateOptions(CudaProviderSettings.For(slot, replicaOptions.Gpus, replicaOptions.GpuMemoryHeadroom));
            options.AppendExecutionProvider_CUDA(cuda);
        }
        catch (Exception ex) when (ex is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
        {
#if INFERPOOL_GPU
            throw new InvalidOperationException(
                $"ONNX Runtime's CUDA execution provider could not start on {device}: {ex.Message}. It needs the NVIDIA driver and the CUDA 13 libraries it links against (libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10) and cuDNN 9 on the library path; the message above names the one that did not load.",
                ex);
#else
            throw new InvalidOperationException(
                $"{device} was requested, but this build of InferPool uses the CPU-only ONNX Runtime. Build with -p:InferPoolGpu=true (CUDA 13 and cuDNN 9 needed), or run on the CPU.",
                ex);
#endif
        }
    }
}
