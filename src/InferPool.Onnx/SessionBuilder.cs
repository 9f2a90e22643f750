using System.Collections.Concurrent;
using InferPool.Devices;
using InferPool.Replicas;
using Microsoft.ML.OnnxRuntime;

namespace InferPool.Onnx;

/// <summary>
/// Builds one replica's <see cref="InferenceSession"/> for a slot (CPU threads or the CUDA provider), one build at a time,
/// and records what each build cost in resident memory. Shared by the replica factories; owns the pre-packed weights
/// container its CPU sessions share.
/// </summary>
internal sealed class SessionBuilder : IDisposable
{
    private readonly OnnxModel _model;
    private readonly OnnxReplicaOptions _options;
    private readonly PrePackedWeightsContainer? _prePacked;
    private readonly Lock _buildLock = new();
    private readonly ConcurrentDictionary<string, OnnxReplicaInfo> _replicas = new(StringComparer.Ordinal);

    public SessionBuilder(OnnxModel model, OnnxReplicaOptions? options)
    {
        ArgumentNullException.ThrowIfNull(model);
        _model = model;
        _options = (options ?? new OnnxReplicaOptions()).Snapshot();
        _prePacked = _options.SharePrePackedWeights ? new PrePackedWeightsContainer() : null;
    }

    public IReadOnlyCollection<OnnxReplicaInfo> Replicas => [.. _replicas.Values.OrderBy(r => r.Replica, StringComparer.Ordinal)];

    public InferenceSession Build(ReplicaSlot slot)
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
            return session;
        }
    }

    public void Dispose() => _prePacked?.Dispose();

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
