using InferPool.Jobs.Inputs;

namespace InferPool.Jobs.Parts;

/// <summary>
/// The keys already committed in an output folder, which a resumed run skips. Held as 128-bit hashes in memory that
/// does not grow with the job (the older ones spill to the output folder), so resuming a job of millions of items
/// does not hold millions of strings. Dispose it when the run ends.
/// </summary>
public sealed class CommittedKeys : IDisposable
{
    private readonly KeyHashSet _hashes;

    internal CommittedKeys(string directory) => _hashes = new KeyHashSet(directory);

    /// <summary>Keys committed (each once).</summary>
    public long Count => _hashes.Count;

    /// <summary>True when <paramref name="key"/> is committed.</summary>
    /// <param name="key">An item's key.</param>
    /// <exception cref="IOException">The spilled keys could not be read.</exception>
    public bool Contains(string key) => _hashes.Contains(KeyHashSet.Hash(key));

    /// <summary>Gives back the spilled keys' files.</summary>
    public void Dispose() => _hashes.Dispose();

    internal void Add(string key) => _hashes.Add(KeyHashSet.Hash(key));
}
