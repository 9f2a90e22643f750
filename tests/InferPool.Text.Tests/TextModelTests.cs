using InferPool.Onnx;
using InferPool.Onnx.Tensors;

namespace InferPool.Text.Tests;

public sealed class TextModelTests : IDisposable
{
    private static readonly string Directory = Path.Combine(AppContext.BaseDirectory, "models", "minilm");
    private readonly string _dir = System.IO.Directory.CreateTempSubdirectory("inferpool-text-").FullName;
    private readonly WordPieceTokenizer _tokenizer = WordPieceTokenizer.Load(Path.Combine(Directory, "vocab.txt"));

    public void Dispose()
    {
        _tokenizer.Dispose();
        System.IO.Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void Bind_MiniLM_FindsItsInputsAndTokenVectors()
    {
        var text = TextModel.Bind(OnnxModel.Load(Path.Combine(Directory, "model.onnx")), _tokenizer, TextPooling.Mean, 256);

        Assert.Equal(384, text.Dimensions);
        Assert.Equal("last_hidden_state", text.Model.Outputs[text.TokenOutput].Name);
        var item = text.Prepare("Hello, world!");
        Assert.Equal(3, item.Inputs.Count);
        Assert.Equal([101L, 7592, 1010, 2088, 999, 102], (long[])item.Inputs[0].Values);
        Assert.All(item.Inputs, t => Assert.Equal([6L], t.Shape));
        Assert.Equal(0, text.Batching.PadValues["attention_mask"]);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   \t")]
    public void Prepare_EmptyText_FailsWithTheReason(string empty)
    {
        var text = TextModel.Bind(OnnxModel.Load(Path.Combine(Directory, "model.onnx")), _tokenizer, TextPooling.Mean, 256);

        var error = Assert.Throws<InvalidDataException>(() => text.Prepare(empty));
        Assert.Contains(empty.Length == 0 ? "empty" : "white space", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Bind_ModelWithoutTextInputs_IsRefusedNamingTheInput()
    {
        var model = OnnxModel.Load(Onnx.Tests.TinyModels.Sequence(_dir));

        var error = Assert.Throws<NotSupportedException>(() => TextModel.Bind(model, _tokenizer, TextPooling.Mean, 256));
        Assert.Contains("input ids", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Embed_MeanAndCls_AreUnitVectorsOfTheRightTokens()
    {
        var model = OnnxModel.Load(Path.Combine(Directory, "model.onnx"));
        float[] tokens = [3, 4, 0, 0, 0, 0];
        var outputs = new TensorOutputs([TensorData.Create(tokens, 3, 2), TensorData.Create(new float[] { 0, 0 }, 2)]);
        var mean = TextModel.Bind(model, _tokenizer, TextPooling.Mean, 256);

        // Mean over 3 tokens of [3,4], [0,0], [0,0] is [1, 1.33]; normalised, [0.6, 0.8].
        var pooled = mean.Embed(new TensorOutputs([TensorData.Create(tokens, 3, 2)]));
        Assert.Equal(0.6f, pooled[0], 5);
        Assert.Equal(0.8f, pooled[1], 5);
        var cls = TextModel.Bind(model, _tokenizer, TextPooling.Cls, 256).Embed(new TensorOutputs([TensorData.Create(new float[] { 0, 5, 3, 4 }, 2, 2)]));
        Assert.Equal([0f, 1f], cls);
        Assert.Throws<InvalidOperationException>(() => TextModel.Bind(model, _tokenizer, TextPooling.None, 256).Embed(outputs));
    }
}
