using InferPool.Devices;
using InferPool.Replicas;
using InferPool.Results;

namespace InferPool.Onnx.Tests;

public sealed class OnnxReplicaTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("inferpool-onnx-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(false, 4)]
    [InlineData(true, 8)]
    public async Task Run_TwoReplicasWithBatches_ComputesEveryItem(bool symbolicBatch, int batch)
    {
        var model = OnnxModel.Load(TinyModels.Affine(_dir, symbolicBatch));
        using var factory = new OnnxReplicaFactory(model, new OnnxReplicaOptions { CpuCores = 2 });
        var inputs = Enumerable.Range(0, 100).Select(i => new float[] { i, -i, i * 0.5f, 1 }).ToArray();
        var options = new InferencePoolOptions { Replicas = ReplicaPlan.Cpu(2), MaxBatchSize = batch };

        var results = new List<InferenceResult<float[], float[][]>>();
        await foreach (var r in InferencePool.RunAsync(inputs.ToAsyncEnumerable(), factory, options))
        {
            results.Add(r);
        }

        Assert.Equal(100, results.Count);
        Assert.All(results, r =>
        {
            Assert.True(r.IsSuccess, r.Error?.ToString());
            Assert.Equal(r.Item.Select(x => (2 * x) + 1), r.Value![0]);
        });
        Assert.Equal(2, factory.Replicas.Count);
        Assert.All(factory.Replicas, info => Assert.Equal(1, info.IntraOpThreads));
    }

    [Fact]
    public async Task Run_InputOfWrongLength_FailsThatItemAndNamesTheShape()
    {
        var model = OnnxModel.Load(TinyModels.Affine(_dir));
        using var factory = new OnnxReplicaFactory(model);
        float[][] inputs = [[1, 2, 3, 4], [1, 2, 3], [5, 6, 7, 8]];

        var results = new List<InferenceResult<float[], float[][]>>();
        await foreach (var r in InferencePool.RunAsync(inputs.ToAsyncEnumerable(), factory, new InferencePoolOptions { MaxBatchSize = 3 }))
        {
            results.Add(r);
        }

        Assert.True(results[0].IsSuccess);
        Assert.True(results[2].IsSuccess);
        Assert.False(results[1].IsSuccess);
        Assert.Contains("has 3 values", results[1].Error!.Message, StringComparison.Ordinal);
        Assert.Contains("x Float [N,4]", results[1].Error!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_SingleItemModel_StillTakesBatchesFromThePool()
    {
        var model = OnnxModel.Load(TinyModels.HardCodedReshape(_dir));
        using var onnx = new OnnxReplicaFactory(model);
        var factory = new BatchRecording<float[], float[][]>(onnx);
        var inputs = Enumerable.Range(0, 10).Select(i => new float[] { i, i + 1, i + 2, i + 3 }).ToArray();

        // A slow-to-start replica and a long batch delay let the pool form full batches of 4 before the first call.
        var results = new List<InferenceResult<float[], float[][]>>();
        await foreach (var r in InferencePool.RunAsync(inputs.ToAsyncEnumerable(), factory, new InferencePoolOptions { Replicas = ReplicaPlan.Cpu(1), MaxBatchSize = 4, MaxBatchDelay = TimeSpan.FromSeconds(30) }))
        {
            results.Add(r);
        }

        Assert.Equal(10, results.Count);
        Assert.All(results, r => Assert.Equal(r.Item, r.Value![0]));
        Assert.Equal(10, factory.Sizes.Sum());
        Assert.Contains(factory.Sizes, size => size > 1);
    }

    /// <summary>Passes replicas through and records the size of every batch the pool hands them.</summary>
    private sealed class BatchRecording<TIn, TOut>(IReplicaFactory<TIn, TOut> inner) : IReplicaFactory<TIn, TOut>
    {
        public System.Collections.Concurrent.ConcurrentQueue<int> Sizes { get; } = new();

        public async ValueTask<IReplica<TIn, TOut>> CreateAsync(ReplicaSlot slot, CancellationToken cancellationToken = default) =>
            new Recorded(await inner.CreateAsync(slot, cancellationToken).ConfigureAwait(false), Sizes);

        private sealed class Recorded(IReplica<TIn, TOut> replica, System.Collections.Concurrent.ConcurrentQueue<int> sizes) : IReplica<TIn, TOut>
        {
            public ValueTask<IReadOnlyList<Outcome<TOut>>> InferAsync(IReadOnlyList<TIn> inputs, CancellationToken cancellationToken = default)
            {
                sizes.Enqueue(inputs.Count);
                return replica.InferAsync(inputs, cancellationToken);
            }

            public ValueTask DisposeAsync() => replica.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task Create_CudaSlotOnCpuBuild_SaysHowToGetGpuSupport()
    {
        Skip.If(CudaProviderBuiltIn, "This is the GPU build of ONNX Runtime; the CPU-build message does not apply.");
        var model = OnnxModel.Load(TinyModels.Affine(_dir));
        using var factory = new OnnxReplicaFactory(model);
        var slot = ReplicaPlan.Create(new DeviceAllocation(Device.Cuda(0), 1)).Slots[0];

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(async () => await factory.CreateAsync(slot));
        Assert.Contains("cuda:0", ex.Message, StringComparison.Ordinal);
        Assert.Contains("InferPoolGpu", ex.Message, StringComparison.Ordinal);
    }

    /// <summary>The CUDA path itself: needs an NVIDIA GPU and the GPU build (-p:InferPoolGpu=true), so it is skipped, visibly, elsewhere.</summary>
    [SkippableFact]
    public async Task Run_OnCuda_MatchesTheCpuResults()
    {
        var gpus = NvmlDeviceInventory.Discover();
        Skip.IfNot(CudaProviderBuiltIn, "This is the CPU build of ONNX Runtime, which CI builds, so CI always skips this test; build with -p:InferPoolGpu=true on a machine with an NVIDIA GPU to run it.");
        Skip.If(gpus.Gpus.Count == 0, $"No NVIDIA GPU here ({gpus.UnavailableReason}); the CUDA execution provider was not run.");
        var model = OnnxModel.Load(TinyModels.Affine(_dir, symbolicBatch: true));
        using var factory = new OnnxReplicaFactory(model);
        var inputs = Enumerable.Range(0, 64).Select(i => new float[] { i, -i, i * 0.25f, 3 }).ToArray();
        var options = new InferencePoolOptions { Replicas = ReplicaPlan.Create(new DeviceAllocation(Device.Cuda(0), 2)), MaxBatchSize = 16 };

        var results = new List<InferenceResult<float[], float[][]>>();
        await foreach (var r in InferencePool.RunAsync(inputs.ToAsyncEnumerable(), factory, options))
        {
            results.Add(r);
        }

        Assert.All(results, r =>
        {
            Assert.True(r.IsSuccess, r.Error?.ToString());
            Assert.Equal(Device.Cuda(0), r.Device);
            Assert.Equal(r.Item.Select(x => (2 * x) + 1), r.Value![0]);
        });
    }

    private static bool CudaProviderBuiltIn => Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider");

    [Theory]
    [InlineData(2, 2, null, 1)]
    [InlineData(2, 1, null, 2)]
    [InlineData(16, 4, null, 4)]
    [InlineData(2, 4, null, 1)]
    [InlineData(8, 2, 3, 3)]
    public void ThreadsFor_NeverOversubscribesUnlessTold(int cores, int replicas, int? explicitThreads, int expected)
    {
        var options = new OnnxReplicaOptions { CpuCores = cores, IntraOpThreads = explicitThreads };
        Assert.Equal(expected, options.ThreadsFor(replicas));
    }
}
