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
}
