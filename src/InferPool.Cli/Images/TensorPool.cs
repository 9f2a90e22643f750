using System.Collections.Concurrent;

namespace InferPool.Cli.Images;

/// <summary>
/// Reuses prepared-image arrays (600 KB each for 224×224): without it every image costs a large-object-heap
/// allocation, and on a machine whose cores all run replicas the resulting full collections show up as
/// lost throughput. Holds at most <paramref name="capacity"/> idle arrays.
/// </summary>
internal sealed class TensorPool(int length, int capacity)
{
    private readonly ConcurrentBag<float[]> _idle = [];

    public int Length { get; } = length;

    public float[] Rent() => _idle.TryTake(out var array) ? array : GC.AllocateUninitializedArray<float>(Length);

    public void Return(float[] array)
    {
        if (array.Length == Length && _idle.Count < capacity)
        {
            _idle.Add(array);
        }
    }
}
