using System.Collections.Concurrent;

namespace InferPool.Images;

/// <summary>
/// Reuses prepared-image arrays (600 KB each for 224×224): without it every image costs a large-object-heap
/// allocation, and on a machine whose cores all run replicas the resulting full collections show up as
/// lost throughput. Holds at most <paramref name="capacity"/> idle arrays. Thread-safe.
/// </summary>
/// <param name="length">The length of every array.</param>
/// <param name="capacity">The most idle arrays kept; size it to what can be in flight at once.</param>
public sealed class TensorPool(int length, int capacity)
{
    private readonly ConcurrentBag<float[]> _idle = [];

    /// <summary>The length of every array.</summary>
    public int Length { get; } = length;

    /// <summary>An idle array, or a new one; its contents are undefined.</summary>
    public float[] Rent() => _idle.TryTake(out var array) ? array : GC.AllocateUninitializedArray<float>(Length);

    /// <summary>Gives an array back for reuse (one of another length, or past the capacity, is dropped).</summary>
    /// <param name="array">The array, no longer used by the caller.</param>
    public void Return(float[] array)
    {
        if (array.Length == Length && _idle.Count < capacity)
        {
            _idle.Add(array);
        }
    }
}
