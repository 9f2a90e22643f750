using System.Collections.Concurrent;
using InferPool.Devices;
using InferPool.Results;

namespace InferPool.Tests;

/// <summary>Helpers shared by the pool tests: bounded waits and result collection.</summary>
internal static class PoolTestKit
{
    /// <summary>The longest any test waits for something that should happen at once; a hang fails the test instead of the run.</summary>
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    public static async Task<List<InferenceResult<TIn, TOut>>> CollectAsync<TIn, TOut>(IAsyncEnumerable<InferenceResult<TIn, TOut>> results)
    {
        var list = new List<InferenceResult<TIn, TOut>>();
        await foreach (var r in results.WithCancellation(CancellationToken.None))
        {
            list.Add(r);
        }

        return list;
    }

    public static Task<List<InferenceResult<TIn, TOut>>> CollectBoundedAsync<TIn, TOut>(IAsyncEnumerable<InferenceResult<TIn, TOut>> results) =>
        CollectAsync(results).WaitAsync(Bound);

    public static ReplicaPlan Plan(params (string Device, int Replicas)[] devices) =>
        ReplicaPlan.Create([.. devices.Select(d => new DeviceAllocation(Device.Parse(d.Device), d.Replicas))]);
}

/// <summary>A model that records what it was asked to do.</summary>
internal sealed class RecordingModel(ReplicaSlot slot) : IDisposable
{
    public ReplicaSlot Slot { get; } = slot;

    public ConcurrentQueue<int> BatchSizes { get; } = new();

    public ConcurrentBag<int> ThreadIds { get; } = [];

    public bool Disposed { get; private set; }

    public static RecordingModel Create(ReplicaSlot slot, ConcurrentBag<RecordingModel> created)
    {
        var model = new RecordingModel(slot);
        created.Add(model);
        return model;
    }

    public IReadOnlyList<int> Square(IReadOnlyList<int> batch)
    {
        BatchSizes.Enqueue(batch.Count);
        ThreadIds.Add(Environment.CurrentManagedThreadId);
        return [.. batch.Select(x => x * x)];
    }

    public void Dispose()
    {
        Disposed = true;
    }
}
