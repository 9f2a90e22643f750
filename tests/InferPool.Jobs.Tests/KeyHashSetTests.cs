using InferPool.Jobs.Inputs;

namespace InferPool.Jobs.Tests;

/// <summary>
/// The set of key hashes a run has seen, with a tiny memory limit so that nearly all of it is in merged run files on
/// disk: every key added once is found again, whichever run holds it, and none is found that was not added.
/// </summary>
public sealed class KeyHashSetTests : TempFolderTest
{
    [Fact]
    public void Add_OverManySpills_FindsEveryKeyAgainAndNoOther()
    {
        var random = new Random(3);
        var keys = Enumerable.Range(0, 20_000).Select(_ => new UInt128((ulong)random.NextInt64(), (ulong)random.NextInt64())).Distinct().ToArray();
        var absent = Enumerable.Range(0, 5_000).Select(_ => new UInt128((ulong)random.NextInt64(), (ulong)random.NextInt64())).Except(keys).ToArray();
        using var set = new KeyHashSet(Dir, memoryLimit: 100);

        for (var i = 0; i < keys.Length; i++)
        {
            Assert.True(set.Add(keys[i]), $"key {i} was new");

            // Now and then, an earlier key comes again (from memory, from a young run, from an old merged one).
            if (i % 97 == 0)
            {
                Assert.False(set.Add(keys[random.Next(i + 1)]));
            }
        }

        Assert.Equal(keys.Length, set.Count);
        Assert.All(keys, k => Assert.False(set.Add(k)));
        Assert.All(absent, k => Assert.True(set.Add(k)));
        Assert.Equal(keys.Length + absent.Length, set.Count);

        // Merged as they pile up: about log2(keys / limit) runs, not one per spill (250 here).
        Assert.InRange(set.Runs, 1, 2 * (int)Math.Ceiling(Math.Log2(set.Count / 100.0)));
    }

    [Fact]
    public void RunFiles_AreGoneFromTheFolder_WhileInUseWhereTheSystemAllowsIt_AndAfterDispose()
    {
        using (var set = new KeyHashSet(Dir, memoryLimit: 10))
        {
            for (ulong i = 0; i < 1_000; i++)
            {
                set.Add(new UInt128(i * 0x9E3779B97F4A7C15, i));
            }

            Assert.True(set.Runs > 0);
            if (!OperatingSystem.IsWindows())
            {
                Assert.Empty(Directory.GetFiles(Dir));
            }
        }

        Assert.Empty(Directory.GetFiles(Dir));
    }
}
