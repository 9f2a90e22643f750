namespace InferPool.Onnx.Tests;

public sealed class OnnxModelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("inferpool-onnx-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Load_SymbolicBatch_BatchesNatively()
    {
        var model = OnnxModel.Load(TinyModels.Affine(_dir, symbolicBatch: true));

        Assert.Equal(BatchingSupport.Native, model.Batching);
        Assert.Null(model.MaxBatchSize);
        Assert.Equal("[N,4]", model.Input.ShapeText);
        Assert.Equal(4, model.Input.ItemLength);
        Assert.Equal(64, model.Sha256.Length);
    }

    [Fact]
    public void Load_BatchFixedAtOne_IsRewrittenAndChecked()
    {
        var model = OnnxModel.Load(TinyModels.Affine(_dir));

        Assert.Equal(BatchingSupport.Rewritten, model.Batching);
        Assert.Null(model.MaxBatchSize);
        Assert.Equal("[N,4]", model.Input.ShapeText);
        Assert.Equal("[N,4]", model.Outputs[0].ShapeText);
        Assert.Contains("rewritten", model.BatchingReport, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_HardCodedReshape_FallsBackToSingleItems()
    {
        var model = OnnxModel.Load(TinyModels.HardCodedReshape(_dir));

        Assert.Equal(BatchingSupport.SingleItem, model.Batching);
        Assert.Equal(1, model.MaxBatchSize);
        Assert.Contains("fails on a batch", model.BatchingReport, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_ModelMixesTheBatch_ParityCheckRefusesTheRewrite()
    {
        var model = OnnxModel.Load(TinyModels.BatchMixing(_dir));

        Assert.Equal(BatchingSupport.SingleItem, model.Batching);
        Assert.Contains("different numbers", model.BatchingReport, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_TwoInputs_LoadsBothWithBatchesOfAnySize()
    {
        var model = OnnxModel.Load(TinyModels.TwoInputs(_dir, symbolicBatch: true));

        Assert.Equal(["a", "b"], model.Inputs.Select(i => i.Name));
        Assert.Equal(BatchingSupport.Native, model.Batching);
        Assert.False(model.IsSingleFloatInput);
        Assert.Throws<InvalidOperationException>(() => model.Input);
    }

    [Fact]
    public void Load_TwoInputsWithBatchFixedAtOne_IsRewrittenAndCheckedOnEveryInput()
    {
        var model = OnnxModel.Load(TinyModels.TwoInputs(_dir, symbolicBatch: false));

        Assert.Equal(BatchingSupport.Rewritten, model.Batching);
        Assert.All(model.Inputs, i => Assert.Equal(-1, i.Shape[0]));
        Assert.Equal(-1, model.Outputs[0].Shape[0]);
    }

    [Fact]
    public void Load_NotAModel_NamesTheFile()
    {
        var path = Path.Combine(_dir, "garbage.onnx");
        File.WriteAllText(path, "this is not a protobuf");

        var ex = Assert.Throws<InvalidDataException>(() => OnnxModel.Load(path));
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingFile_Throws()
    {
        var ex = Assert.Throws<FileNotFoundException>(() => OnnxModel.Load(Path.Combine(_dir, "nope.onnx")));
        Assert.Contains("nope.onnx", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Output_UnknownName_ListsTheOutputs()
    {
        var model = OnnxModel.Load(TinyModels.Affine(_dir));

        var ex = Assert.Throws<ArgumentException>(() => model.Output("z"));
        Assert.Contains("its outputs are y", ex.Message, StringComparison.Ordinal);
    }
}
