using System.Collections.Concurrent;
using InferPool.Devices;
using InferPool.Replicas;
using Microsoft.ML.OnnxRuntime;

namespace InferPool.Onnx;

/// <summary>
/// Builds one replica's <see cref="InferenceSession"/> for a slot (CPU threads or the CUDA provider) and records what each
/// build cost in resident memory: builds that optimize the model, and GPU builds, one at a time; CPU builds from a saved
/// optimized graph side by side. Shared by the replica factories; owns the pre-packed weights
/// container its CPU sessions share.
/// </summary>
internal sealed class SessionBuilder : IDisposable
{
    private readonly OnnxModel _model;
    private readonly OnnxReplicaOptions _options;
    private readonly PrePackedWeightsContainer? _prePacked;
    private readonly Lock _buildLock = new();
    private readonly ConcurrentDictionary<string, OnnxReplicaInfo> _replicas = new(StringComparer.Ordinal);
    private readonly OverlappingBuilds _sideBySide = new();

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

        var optimized = !slot.Device.IsGpu && _model.CacheDirectory.Length > 0 && _options.OptimizationLevel != GraphOptimizationLevel.ORT_DISABLE_ALL
            ? ModelCheckCache.OptimizedGraphFile(_model.CacheDirectory, _model.Sha256)
            : null;
        InferenceSession? FromSavedGraph() =>
            optimized is not null && File.Exists(optimized) ? TryBuildFromOptimized(slot, threads, optimized, sessionOptions) : null;

        if (FromSavedGraph() is { } fromOptimized)
        {
            return fromOptimized;
        }

        // One build at a time: builds that parse and optimize the model in parallel leave ~50 MB more per replica resident
        // (measured on ResNet-18), which is the memory this trade is meant to save. A replica starts taking work as soon as
        // it is built, so the others' builds overlap with inference anyway; and once the first CPU build has saved the
        // optimized graph, the others waiting here load that instead.
        lock (_buildLock)
        {
            if (FromSavedGraph() is { } built)
            {
                return built;
            }

            ProcessMemory.ReturnFreedMemory();
            var before = ProcessMemory.ResidentBytes();
            var session = slot.Device.IsGpu
                ? new InferenceSession(_model.SessionBytes, sessionOptions)
                : BuildAndSaveOptimized(sessionOptions, optimized);
            ProcessMemory.ReturnFreedMemory();
            var grown = Math.Max(0, ProcessMemory.ResidentBytes() - before);
            _replicas[slot.Name] = new OnnxReplicaInfo(slot.Name, threads, grown);
            return session;
        }
    }

    /// <summary>
    /// A CPU session from the optimized graph an earlier build saved (graph optimization off), or null when that file does
    /// not load (it is deleted, and the caller optimizes the model again). Graph optimization is most of a session's build
    /// time, and its result never changes for a model, an ONNX Runtime and a CPU. These builds run side by side (ResNet-18 on
    /// two cores: both replicas ready in ~130 ms instead of ~100 + 80 one after the other, with no more memory: the weights
    /// are pre-packed once and shared); ONNX Runtime reads the file itself, so no copy of the graph stays in managed memory.
    /// The process's growth over builds that overlap is divided among them.
    /// </summary>
    private InferenceSession? TryBuildFromOptimized(ReplicaSlot slot, int threads, string optimized, SessionOptions sessionOptions)
    {
        var level = sessionOptions.GraphOptimizationLevel;
        sessionOptions.GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL;
        _sideBySide.Enter(slot.Name, threads);
        InferenceSession? session = null;
        try
        {
            session = NewSession(optimized, sessionOptions);
            return session;
        }
        catch (OnnxRuntimeException)
        {
            TryDelete(optimized);
            sessionOptions.GraphOptimizationLevel = level;
            return null;
        }
        finally
        {
            foreach (var info in _sideBySide.Leave(slot.Name, built: session is not null))
            {
                _replicas[info.Replica] = info;
            }
        }
    }

    /// <summary>
    /// A CPU session built from the model, saving its optimized graph in the model's cache folder for later builds, in this
    /// run or the next. A graph that cannot be saved (a read-only cache folder) costs later builds their optimization only.
    /// </summary>
    private InferenceSession BuildAndSaveOptimized(SessionOptions sessionOptions, string? optimized)
    {
        string? saving = null;
        if (optimized is not null && ModelCheckCache.EnsureDirectory(_model.CacheDirectory))
        {
            saving = $"{optimized}.{Environment.ProcessId}.tmp";
            sessionOptions.OptimizedModelFilePath = saving;
            // ONNX Runtime warns that the saved graph is specific to this CPU: it is kept per CPU for that reason.
            sessionOptions.LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
        }

        InferenceSession session;
        try
        {
            session = NewSession(_model.SessionBytes, sessionOptions);
        }
        catch (Exception) when (saving is not null)
        {
            // Saving the graph failed (a cache folder that cannot be written): the session is built without saving it;
            // a failure of the model itself shows again here, with its own message.
            TryDelete(saving);
            saving = null;
            sessionOptions.OptimizedModelFilePath = "";
            session = NewSession(_model.SessionBytes, sessionOptions);
        }

        if (saving is not null)
        {
            try
            {
                File.Move(saving, optimized!, overwrite: true);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                TryDelete(saving); // a read-only cache folder costs the next build its optimization, nothing else
            }
        }

        return session;
    }

    private InferenceSession NewSession(byte[] bytes, SessionOptions sessionOptions) =>
        _prePacked is not null ? new InferenceSession(bytes, sessionOptions, _prePacked) : new InferenceSession(bytes, sessionOptions);

    private InferenceSession NewSession(string path, SessionOptions sessionOptions) =>
        _prePacked is not null ? new InferenceSession(path, sessionOptions, _prePacked) : new InferenceSession(path, sessionOptions);

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Left for the next build to overwrite.
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
