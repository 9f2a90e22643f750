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
}
