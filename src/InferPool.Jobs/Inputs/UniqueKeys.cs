namespace InferPool.Jobs.Inputs;

/// <summary>
/// Gives every item of a run a key no earlier item has: a repeated key becomes <c>key#2</c>, <c>key#3</c>, … (the
/// first suffix not taken), in input order, so a resumed run renames exactly as the first did. With
/// <see cref="DuplicateKeys.Fail"/> the renamed item fails with the reason.
/// </summary>
/// <remarks>
/// Keys are remembered by their 128-bit XXH3 hash, not as strings (a chance of two different keys colliding of about
/// n² / 2¹²⁹, which is nil for any real input), in a <see cref="KeyHashSet"/>: memory that does not grow with the
/// input, the older hashes on disk in the output folder. (A hash set of them all took about 45 MB at a million keys.)
/// </remarks>
internal sealed class UniqueKeys(DuplicateKeys policy, string directory) : IDisposable
{
    private readonly KeyHashSet _seen = new(directory);

    public void Dispose() => _seen.Dispose();

    public InputItem Apply(InputItem item)
    {
        if (_seen.Add(KeyHashSet.Hash(item.Key)))
        {
            return item;
        }

        var n = 2;
        string unique;
        while (!_seen.Add(KeyHashSet.Hash(unique = $"{item.Key}#{n}")))
        {
            n++;
        }

        return policy == DuplicateKeys.MakeUnique
            ? item with { Key = unique }
            : InputItem.Unusable(unique, $"Duplicate key: an earlier item already has the key '{item.Key}', so this one is kept as '{unique}' and not run (allow duplicate keys to run it).");
    }
}
