namespace InferPool.Jobs.Inputs;

/// <summary>
/// Gives every item of a run a key no earlier item has: a repeated key becomes <c>key#2</c>, <c>key#3</c>, … (the
/// first suffix not taken), in input order, so a resumed run renames exactly as the first did. With
/// <see cref="DuplicateKeys.Fail"/> the renamed item fails with the reason. Holds every key read.
/// </summary>
internal sealed class UniqueKeys(DuplicateKeys policy)
{
    private readonly HashSet<string> _seen = new(StringComparer.Ordinal);

    public InputItem Apply(InputItem item)
    {
        if (_seen.Add(item.Key))
        {
            return item;
        }

        var n = 2;
        string unique;
        while (!_seen.Add(unique = $"{item.Key}#{n}"))
        {
            n++;
        }

        return policy == DuplicateKeys.MakeUnique
            ? item with { Key = unique }
            : InputItem.Unusable(unique, $"Duplicate key: an earlier item already has the key '{item.Key}', so this one is kept as '{unique}' and not run (allow duplicate keys to run it).");
    }
}
