using InferPool.Jobs.Inputs;

namespace InferPool.Jobs.Tests;

public sealed class InputSourceTests : TempFolderTest
{
    [Fact]
    public async Task ListFile_CountsAndReadsTheSameRecordLines()
    {
        var list = Write("list.txt", "a.jpg\n\n   \n# a comment\n  # an indented comment\nb.jpg\r\nc.jpg");
        var source = InputSource.Open(list);

        var items = await source.ReadAsync().ToListAsync();

        Assert.Equal(3, source.Count());
        Assert.Equal(["a.jpg", "b.jpg", "c.jpg"], items.Select(i => i.Key));
        Assert.All(items, i => Assert.Equal(Path.Combine(Dir, i.Key), i.Path));
    }

    /// <summary>A long list (more keys than the check holds in memory, so most are on disk) with its fifth key again at its end: both lines are named.</summary>
    [Fact]
    public void ListFile_WithAKeyTwice_FarApart_IsRefusedNamingBothLines()
    {
        var lines = Enumerable.Range(0, KeyHashSet.DefaultMemoryLimit + 5_000).Select(i => $"f{i}.jpg").Append("f4.jpg");
        var list = Write("list.txt", string.Join('\n', lines));

        var ex = Assert.Throws<DuplicateKeyException>(() => InputSource.Open(list).CheckKeysUnique(Dir));

        Assert.Equal("f4.jpg", ex.Key);
        Assert.Contains("line 5 of", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"line {KeyHashSet.DefaultMemoryLimit + 5_001}", ex.Message, StringComparison.Ordinal);
        Assert.Single(Directory.GetFiles(Dir)); // the list alone: the spilled keys are gone
    }

    [Fact]
    public async Task Folder_IsWalkedInAStableOrderWithRelativeKeys()
    {
        Write("b/2.png", [1]);
        Write("b/1.jpg", [1]);
        Write("a.png", [1]);
        Write("notes.txt", "not an image");
        var source = InputSource.Open(Dir);

        var items = await source.ReadAsync().ToListAsync();

        Assert.Equal(3, source.Count());
        Assert.Equal(["a.png", "b/1.jpg", "b/2.png"], items.Select(i => i.Key));
    }

    [Theory]
    [InlineData("list")]
    [InlineData("jsonl")]
    [InlineData("text")]
    public async Task ReadingFromARecordsPosition_GivesWhatSkippingToItGives(string kind)
    {
        // Blank lines, comments, CRLF, a bad line and no final line break: positions must count them all alike.
        var lines = Enumerable.Range(0, 40).Select(i => i % 7 == 3 ? "" : i % 11 == 5 ? "# comment" : kind == "jsonl" ? $"{{\"key\": \"k{i}\", \"path\": \"f{i}.png\"}}" : $"f{i}.png");
        var path = Write($"input.{(kind == "jsonl" ? "jsonl" : "txt")}", string.Join("\r\n", lines) + "\n{broken\nlast.png");
        var source = kind == "text" ? InputSource.OpenTexts(path) : InputSource.Open(path);
        var all = await source.ReadAsync().ToListAsync();
        Assert.All(all, i => Assert.NotNull(i.Position));

        foreach (var first in new[] { 0, 1, 5, 17, all.Count - 1 })
        {
            var skipped = await source.ReadAsync(first, 6).ToListAsync();
            var sought = await source.ReadAsync(first, 6, all[first].Position!.Value).ToListAsync();

            Assert.Equal(skipped.Select(i => (i.Key, i.Path, i.Text, i.Error, i.Position)), sought.Select(i => (i.Key, i.Path, i.Text, i.Error, i.Position)));
            Assert.Equal(all.Skip(first).Take(6).Select(i => i.Key), sought.Select(i => i.Key));
        }
    }
}
