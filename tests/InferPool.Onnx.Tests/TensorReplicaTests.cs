using InferPool.Devices;
using InferPool.Onnx.Tensors;
using InferPool.Results;
using Microsoft.ML.OnnxRuntime;

namespace InferPool.Onnx.Tests;

/// <summary>Models with any inputs and outputs, run through the pool, against ONNX Runtime run directly on each item.</summary>
public sealed class TensorReplicaTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("inferpool-tensors-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Run_TwoInputsThreeOutputTypes_EqualsOnnxRuntimeItemByItem()
    {
        var path = TinyModels.Mixed(_dir);
        var model = OnnxModel.Load(path);
        var random = new Random(7);
        var items = Enumerable.Range(0, 37).Select(_ => new TensorItem(
        [
            TensorData.Create(Enumerable.Range(0, 3).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray(), 3),
            TensorData.Create(Enumerable.Range(0, 3).Select(_ => (long)random.Next(-1000, 1000) * 1_000_000_000L).ToArray(), 3),
        ])).ToList();

        var results = await RunAsync(model, items, new TensorBatching(), batch: 8);

        using var direct = new InferenceSession(path);
        Assert.Equal(items.Count, results.Count);
        for (var i = 0; i < items.Count; i++)
        {
            var expected = Direct(direct, model, items[i]);
            Assert.True(results[i].IsSuccess, results[i].Error?.ToString());
            AssertSame(expected, results[i].Value!.Values);
        }

        // int64 values beyond float precision come back exact.
        Assert.Equal(((long[])items[0].Inputs[1].Values).Select(v => v * 2), (long[])results[0].Value!.Values[1].Values);
    }

    [Theory]
    [InlineData(true, null)]
    [InlineData(true, 12)]
    [InlineData(true, 1)]
    [InlineData(false, null)]
    public async Task Run_ItemsOfDifferentLengths_PaddedOrGroupedGiveEachItemItsOwnResult(bool pad, int? maxTokens)
    {
        var path = TinyModels.Sequence(_dir);
        var model = OnnxModel.Load(path);
        var random = new Random(11);
        var items = Enumerable.Range(0, 40).Select(i =>
        {
            var length = 1 + random.Next(9);
            return new TensorItem(
            [
                TensorData.Create(Enumerable.Range(0, length).Select(_ => (long)random.Next(1, 30000)).ToArray(), length),
                TensorData.Create(Enumerable.Repeat(1L, length).ToArray(), length),
            ]);
        }).ToList();
        var batching = pad
            ? new TensorBatching { PadValues = new Dictionary<string, double> { ["ids"] = 0, ["mask"] = 0 }, MaxBatchTokens = maxTokens }
            : new TensorBatching { MaxBatchTokens = maxTokens };

        var results = await RunAsync(model, items, batching, batch: 16);

        using var direct = new InferenceSession(path);
        for (var i = 0; i < items.Count; i++)
        {
            Assert.True(results[i].IsSuccess, results[i].Error?.ToString());
            var outputs = results[i].Value!.Values;
            Assert.Equal(items[i].Inputs[0].Shape, outputs[0].Shape);
            Assert.Empty(outputs[1].Shape);
            AssertSame(Direct(direct, model, items[i]), outputs);
        }
    }

    [Fact]
    public async Task Run_EveryOtherElementType_RoundTrips()
    {
        var path = TinyModels.Typed(_dir);
        var model = OnnxModel.Load(path);
        var items = Enumerable.Range(0, 9).Select(i => new TensorItem(
        [
            TensorData.Create(new[] { i + 0.25, -i * 1e-300 }, 2),
            TensorData.Create(new[] { (Float16)(i * 0.5f), (Float16)(-1.5f) }, 2),
            TensorData.Create(new[] { (byte)i, (byte)255 }, 2),
            TensorData.Create(new[] { i, int.MinValue / 2 }, 2),
            TensorData.Create(new[] { i % 2 == 0, true }, 2),
        ])).ToList();

        var results = await RunAsync(model, items, new TensorBatching(), batch: 4);

        using var direct = new InferenceSession(path);
        for (var i = 0; i < items.Count; i++)
        {
            Assert.True(results[i].IsSuccess, results[i].Error?.ToString());
            AssertSame(Direct(direct, model, items[i]), results[i].Value!.Values);
        }

        Assert.Equal([false, false], (bool[])results[0].Value!.Values[4].Values);
        Assert.Equal([(byte)3, (byte)255], (byte[])results[3].Value!.Values[2].Values);
    }

    [Fact]
    public async Task Run_WholeInputWithItsBatchDimension_JoinsOtherItemsAndKeepsItsRows()
    {
        var path = TinyModels.Mixed(_dir);
        var model = OnnxModel.Load(path);
        TensorItem One(float x) => new([TensorData.Create(new[] { x, x, x }, 3), TensorData.Create(new[] { 1L, 2, 3 }, 3)]);
        var whole = new TensorItem(
            [TensorData.Create(new[] { 1f, 2, 3, 4, 5, 6 }, 2, 3), TensorData.Create(new[] { 1L, 1, 1, 2, 2, 2 }, 2, 3)],
            hasBatchDimension: true);

        var results = await RunAsync(model, [One(1), whole, One(-1)], new TensorBatching(), batch: 3);

        Assert.All(results, r => Assert.True(r.IsSuccess, r.Error?.ToString()));
        Assert.Equal([2L, 3], results[1].Value!.Values[0].Shape);
        Assert.Equal([2f, 3, 4, 6, 7, 8], (float[])results[1].Value!.Values[0].Values);
        Assert.Equal([3L], results[2].Value!.Values[0].Shape);
        Assert.Equal([0f, 1, 2], (float[])results[2].Value!.Values[0].Values);
    }

    [Fact]
    public async Task Run_ItemThatContradictsAFixedDimension_FailsAloneNamingTheInput()
    {
        var model = OnnxModel.Load(TinyModels.Mixed(_dir));
        TensorItem Item(int width) => new([TensorData.Create(new float[width], width), TensorData.Create(new long[width], width)]);

        var results = await RunAsync(model, [Item(3), Item(4), Item(3)], new TensorBatching(), batch: 3);

        Assert.True(results[0].IsSuccess);
        Assert.True(results[2].IsSuccess);
        Assert.False(results[1].IsSuccess);
        Assert.Contains("Input x has shape [4]", results[1].Error!.Message, StringComparison.Ordinal);
        Assert.Contains("model input x Float [N,3] fixes dimension 1 at 3", results[1].Error!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WarmUpBatch_FixedShapes_RunsAsAFullBatchThroughAReplica_SymbolicLengths_HaveNone()
    {
        // What the pool runs through a new GPU replica before measuring its memory: zeros in every input's item shape.
        var slot = ReplicaPlan.Cpu(1).Slots[0];
        using (var tensors = new OnnxTensorReplicaFactory(OnnxModel.Load(TinyModels.Mixed(_dir))))
        {
            var batch = tensors.WarmUpBatch(8)!;
            Assert.Equal(8, batch.Count);
            await using var replica = await tensors.CreateAsync(slot);
            var outcomes = await replica.InferAsync(batch);
            Assert.Equal(8, outcomes.Count);
            Assert.All(outcomes, o => Assert.True(o.IsSuccess, o.Error?.ToString()));
        }

        using (var floats = new OnnxReplicaFactory(OnnxModel.Load(TinyModels.Affine(_dir, symbolicBatch: true))))
        {
            await using var replica = await floats.CreateAsync(slot);
            var outcomes = await replica.InferAsync(floats.WarmUpBatch(5)!);
            Assert.Equal(5, outcomes.Count(o => o.IsSuccess));
        }

        using var text = new OnnxTensorReplicaFactory(OnnxModel.Load(TinyModels.Sequence(_dir)));
        Assert.Null(text.WarmUpBatch(8)); // a sequence length no placeholder could stand for
    }

    [Fact]
    public void Load_StringInput_IsRefusedNamingTheInput()
    {
        var error = Assert.Throws<NotSupportedException>(() => OnnxModel.Load(TinyModels.StringInput(_dir)));
        Assert.Contains("input 'text'", error.Message, StringComparison.Ordinal);
        Assert.Contains("String", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Factory_PadValueForAnInputTheModelLacks_IsRefused()
    {
        var model = OnnxModel.Load(TinyModels.Sequence(_dir));
        var error = Assert.Throws<ArgumentException>(() => new OnnxTensorReplicaFactory(model, batching: new TensorBatching { PadValues = new Dictionary<string, double> { ["input_ids"] = 0 } }));
        Assert.Contains("'input_ids'", error.Message, StringComparison.Ordinal);
    }

    private static async Task<List<InferenceResult<TensorItem, TensorOutputs>>> RunAsync(OnnxModel model, List<TensorItem> items, TensorBatching batching, int batch)
    {
        using var factory = new OnnxTensorReplicaFactory(model, new OnnxReplicaOptions { CpuCores = 2 }, batching);
        var options = new InferencePoolOptions { Replicas = ReplicaPlan.Cpu(2), MaxBatchSize = batch, MaxBatchDelay = TimeSpan.FromSeconds(1) };
        var results = new List<InferenceResult<TensorItem, TensorOutputs>>();
        await foreach (var r in InferencePool.RunAsync(items.ToAsyncEnumerable(), factory, options))
        {
            results.Add(r);
        }

        Assert.Equal(items.Count, results.Count);
        return results;
    }

    /// <summary>The item's outputs from ONNX Runtime itself: the item alone, as a batch of one.</summary>
    private static TensorData[] Direct(InferenceSession session, OnnxModel model, TensorItem item)
    {
        var values = item.Inputs.Select(t => TensorData.ToOrtValue(t.Values, item.HasBatchDimension ? t.Shape : [1, .. t.Shape])).ToArray();
        try
        {
            using var outputs = session.Run(new RunOptions(), [.. model.Inputs.Select(i => i.Name)], values, [.. model.Outputs.Select(o => o.Name)]);
            return [.. outputs.Select(TensorData.FromOrtValue)];
        }
        finally
        {
            foreach (var value in values)
            {
                value.Dispose();
            }
        }
    }

    private static void AssertSame(TensorData[] expected, IReadOnlyList<TensorData> actual)
    {
        Assert.Equal(expected.Length, actual.Count);
        for (var o = 0; o < expected.Length; o++)
        {
            Assert.Equal(expected[o].ElementType, actual[o].ElementType);
            Assert.Equal(expected[o].Values.Length, actual[o].Values.Length);
            Assert.Equal(expected[o].Values.Cast<object>(), actual[o].Values.Cast<object>());
        }
    }
}
