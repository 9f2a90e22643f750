namespace InferPool.Text.Tests;

/// <summary>The tokenizer against BERT's uncased WordPiece (the all-MiniLM-L6-v2 vocabulary), as Hugging Face splits text.</summary>
public sealed class WordPieceTokenizerTests : IDisposable
{
    private static readonly string Vocab = Path.Combine(AppContext.BaseDirectory, "models", "minilm", "vocab.txt");
    private static readonly string[] Tokens = File.ReadAllLines(Vocab);
    private readonly WordPieceTokenizer _tokenizer = WordPieceTokenizer.Load(Vocab);

    public void Dispose() => _tokenizer.Dispose();

    [Fact]
    public void Tokenize_Sentence_GivesClsWordPiecesSep()
    {
        var tokens = _tokenizer.Tokenize("Hello, world!", 256);

        Assert.Equal([101L, 7592, 1010, 2088, 999, 102], tokens.Ids);
        Assert.False(tokens.Truncated);
        Assert.Equal((101L, 102L), (_tokenizer.ClsId, _tokenizer.SepId));
    }

    [Theory]
    [InlineData("Café naïve ÉCOLE", new[] { "cafe", "naive", "ecole" })]
    [InlineData("Vn.4S", new[] { "v", "##n", ".", "4", "##s" })]
    [InlineData("__m256d (U+0080)", new[] { "_", "_", "m2", "##56", "##d", "(", "u", "+", "00", "##80", ")" })]
    public void Tokenize_AccentsAndPunctuation_SplitAsBertDoes(string text, string[] expected)
    {
        var tokens = _tokenizer.Tokenize(text, 256);

        Assert.Equal(["[CLS]", .. expected, "[SEP]"], tokens.Ids.Select(id => Tokens[id]));
    }

    [Fact]
    public void Tokenize_LongerThanTheLimit_IsCutEndsWithSepAndSaysSo()
    {
        var text = string.Join(' ', Enumerable.Repeat("the quick brown fox", 50));

        var cut = _tokenizer.Tokenize(text, 16);
        var whole = _tokenizer.Tokenize(text, 512);

        Assert.True(cut.Truncated);
        Assert.Equal(16, cut.Ids.Length);
        Assert.Equal(_tokenizer.SepId, cut.Ids[^1]);
        Assert.Equal(whole.Ids[..15], cut.Ids[..15]);
        Assert.False(whole.Truncated);
        Assert.Equal(202, whole.Ids.Length);
    }

    [Fact]
    public void Tokenize_OneMegabyteLine_IsCutToTheLimit()
    {
        var tokens = _tokenizer.Tokenize(new string('a', 1 << 20), 256);

        Assert.True(tokens.Truncated);
        Assert.True(tokens.Ids.Length <= 256);
        Assert.Equal(_tokenizer.SepId, tokens.Ids[^1]);
    }

    [Fact]
    public void Load_NotAVocabulary_NamesTheFile()
    {
        var path = Path.Combine(Path.GetTempPath(), $"inferpool-vocab-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, "{\"model\": 42}");
        try
        {
            var error = Assert.Throws<InvalidDataException>(() => WordPieceTokenizer.Load(path));
            Assert.Contains(path, error.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Tokenize_OnManyThreadsOneAfterAnother_LoadsTheVocabularyOnce()
    {
        // A long job's prepare workers run on whichever thread-pool thread is free; a copy of the vocabulary per thread
        // grew memory with the job. Twenty threads, one at a time, share the one copy.
        for (var i = 0; i < 20; i++)
        {
            var thread = new Thread(() => Assert.Equal(6, _tokenizer.Tokenize("Hello, world!", 256).Ids.Length));
            thread.Start();
            thread.Join();
        }

        Assert.Equal(1, _tokenizer.TokenizersLoaded);
    }

    [Fact]
    public async Task Tokenize_CallsAtTheSameTime_EachGetsItsOwnCopy_AndAllAgree()
    {
        var texts = Enumerable.Range(0, 400).Select(i => $"Sentence number {i} about café naïve tokenizers.").ToArray();
        var expected = texts.Select(t => _tokenizer.Tokenize(t, 64).Ids).ToArray();

        var results = new long[texts.Length][];
        await Parallel.ForAsync(0, texts.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, (i, _) =>
        {
            results[i] = _tokenizer.Tokenize(texts[i], 64).Ids;
            return ValueTask.CompletedTask;
        });

        Assert.Equal(expected, results);
        Assert.InRange(_tokenizer.TokenizersLoaded, 1, 4);
    }
}
