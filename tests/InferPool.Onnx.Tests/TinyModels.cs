using Google.Protobuf;
using Onnx;

namespace InferPool.Onnx.Tests;

/// <summary>Small real ONNX models written with the ONNX protobuf schema, for tests that need exact, fast models.</summary>
internal static class TinyModels
{
    private const int Float = 1;
    private const int UInt8 = 2;
    private const int Int32 = 6;
    private const int Int64 = 7;
    private const int Bool = 9;
    private const int Float16 = 10;
    private const int Double = 11;

    /// <summary>y = 2x + 1 (or <paramref name="scale"/>·x + 1) over [batch, 4]; the batch dimension is fixed at 1 unless <paramref name="symbolicBatch"/>.</summary>
    public static string Affine(string directory, bool symbolicBatch = false, float scale = 2f)
    {
        var graph = new GraphProto { Name = "affine" };
        graph.Input.Add(Value("x", Float, symbolicBatch ? null : 1, 4));
        graph.Output.Add(Value("y", Float, symbolicBatch ? null : 1, 4));
        graph.Initializer.Add(FloatTensor("two", [1], [scale]));
        graph.Initializer.Add(FloatTensor("one", [1], [1f]));
        graph.Node.Add(Node("Mul", ["x", "two"], ["doubled"]));
        graph.Node.Add(Node("Add", ["doubled", "one"], ["y"]));
        return Save(directory, "affine.onnx", graph);
    }

    /// <summary>A model whose Reshape target hard-codes the batch size 1: rewriting its batch dimension must be refused.</summary>
    public static string HardCodedReshape(string directory)
    {
        var graph = new GraphProto { Name = "reshape" };
        graph.Input.Add(Value("x", Float, 1, 2, 2));
        graph.Output.Add(Value("y", Float, 1, 4));
        graph.Initializer.Add(new TensorProto { Name = "shape", DataType = Int64, Dims = { 2 }, Int64Data = { 1, 4 } });
        graph.Node.Add(Node("Reshape", ["x", "shape"], ["y"]));
        return Save(directory, "reshape.onnx", graph);
    }

    /// <summary>A model that mixes items across the batch (y = x - mean over the batch): batched results differ from single ones.</summary>
    public static string BatchMixing(string directory)
    {
        var graph = new GraphProto { Name = "mixing" };
        graph.Input.Add(Value("x", Float, 1, 4));
        graph.Output.Add(Value("y", Float, 1, 4));
        graph.Initializer.Add(new TensorProto { Name = "axes", DataType = Int64, Dims = { 1 }, Int64Data = { 0 } });
        graph.Node.Add(Node("ReduceMean", ["x", "axes"], ["mean"], new AttributeProto { Name = "keepdims", Type = AttributeProto.Types.AttributeType.Int, I = 1 }));
        graph.Node.Add(Node("Sub", ["x", "mean"], ["y"]));
        return Save(directory, "mixing.onnx", graph, opset: 18);
    }

    /// <summary>Two float inputs, y = a + b over [batch, 4]; the batch dimension is fixed at 1 unless <paramref name="symbolicBatch"/>.</summary>
    public static string TwoInputs(string directory, bool symbolicBatch = true)
    {
        var graph = new GraphProto { Name = "two" };
        object? batch = symbolicBatch ? null : 1;
        graph.Input.Add(Value("a", Float, batch, 4));
        graph.Input.Add(Value("b", Float, batch, 4));
        graph.Output.Add(Value("y", Float, batch, 4));
        graph.Node.Add(Node("Add", ["a", "b"], ["y"]));
        return Save(directory, "two-inputs.onnx", graph);
    }

    /// <summary>
    /// Two inputs of two types and three outputs of three: x float [N,3] and n int64 [N,3] give sum = x + n (float),
    /// twice = n + n (int64) and positive = x &gt; 0 (bool).
    /// </summary>
    public static string Mixed(string directory)
    {
        var graph = new GraphProto { Name = "mixed" };
        graph.Input.Add(Value("x", Float, null, 3));
        graph.Input.Add(Value("n", Int64, null, 3));
        graph.Output.Add(Value("sum", Float, null, 3));
        graph.Output.Add(Value("twice", Int64, null, 3));
        graph.Output.Add(Value("positive", Bool, null, 3));
        graph.Initializer.Add(FloatTensor("zero", [1], [0f]));
        graph.Node.Add(Node("Cast", ["n"], ["nf"], new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = Float }));
        graph.Node.Add(Node("Add", ["x", "nf"], ["sum"]));
        graph.Node.Add(Node("Add", ["n", "n"], ["twice"]));
        graph.Node.Add(Node("Greater", ["x", "zero"], ["positive"]));
        return Save(directory, "mixed.onnx", graph);
    }

    /// <summary>
    /// A text-like model: ids and mask int64 [batch, sequence] give tokens = float(ids × mask) [batch, sequence] and
    /// total = Σ ids × mask (int64 [batch]). Padding with 0 changes neither, once tokens are cut back to each item's length.
    /// </summary>
    public static string Sequence(string directory)
    {
        var graph = new GraphProto { Name = "sequence" };
        graph.Input.Add(Value("ids", Int64, null, "sequence"));
        graph.Input.Add(Value("mask", Int64, null, "sequence"));
        graph.Output.Add(Value("tokens", Float, null, "sequence"));
        graph.Output.Add(Value("total", Int64, new object?[] { null }));
        graph.Initializer.Add(new TensorProto { Name = "axes", DataType = Int64, Dims = { 1 }, Int64Data = { 1 } });
        graph.Node.Add(Node("Mul", ["ids", "mask"], ["masked"]));
        graph.Node.Add(Node("Cast", ["masked"], ["tokens"], new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = Float }));
        graph.Node.Add(Node("ReduceSum", ["masked", "axes"], ["total"], new AttributeProto { Name = "keepdims", Type = AttributeProto.Types.AttributeType.Int, I = 0 }));
        return Save(directory, "sequence.onnx", graph);
    }

    /// <summary>
    /// One input and output per remaining element type, [N,2] each: d2 = d + d (double), h2 = h (float16), u2 = u (uint8),
    /// i2 = i + i (int32), nb = not b (bool).
    /// </summary>
    public static string Typed(string directory)
    {
        var graph = new GraphProto { Name = "typed" };
        (string Name, int Type)[] inputs = [("d", Double), ("h", Float16), ("u", UInt8), ("i", Int32), ("b", Bool)];
        foreach (var (name, type) in inputs)
        {
            graph.Input.Add(Value(name, type, null, 2));
        }

        graph.Output.Add(Value("d2", Double, null, 2));
        graph.Output.Add(Value("h2", Float16, null, 2));
        graph.Output.Add(Value("u2", UInt8, null, 2));
        graph.Output.Add(Value("i2", Int32, null, 2));
        graph.Output.Add(Value("nb", Bool, null, 2));
        graph.Node.Add(Node("Add", ["d", "d"], ["d2"]));
        graph.Node.Add(Node("Identity", ["h"], ["h2"]));
        graph.Node.Add(Node("Identity", ["u"], ["u2"]));
        graph.Node.Add(Node("Add", ["i", "i"], ["i2"]));
        graph.Node.Add(Node("Not", ["b"], ["nb"]));
        return Save(directory, "typed.onnx", graph);
    }

    /// <summary>
    /// A BERT-shaped model at almost no cost: input_ids, attention_mask and token_type_ids int64 [batch, sequence] give
    /// last_hidden_state = E[input_ids], float [batch, sequence, 8], with E a fixed random table over BERT's 30,522 ids.
    /// </summary>
    public static string TinyBert(string directory)
    {
        const int vocabulary = 30522;
        const int hidden = 8;
        var random = new Random(5);
        var graph = new GraphProto { Name = "tiny-bert" };
        graph.Input.Add(Value("input_ids", Int64, null, "sequence"));
        graph.Input.Add(Value("attention_mask", Int64, null, "sequence"));
        graph.Input.Add(Value("token_type_ids", Int64, null, "sequence"));
        graph.Output.Add(Value("last_hidden_state", Float, null, "sequence", hidden));
        graph.Initializer.Add(FloatTensor("E", [vocabulary, hidden], [.. Enumerable.Range(0, vocabulary * hidden).Select(_ => random.NextSingle() - 0.5f)]));
        graph.Node.Add(Node("Gather", ["E", "input_ids"], ["last_hidden_state"]));
        return Save(directory, "tiny-bert.onnx", graph);
    }

    /// <summary>A model with a string input, which the built-in replica cannot feed.</summary>
    public static string StringInput(string directory)
    {
        var graph = new GraphProto { Name = "strings" };
        graph.Input.Add(Value("text", 8, null, 1));
        graph.Output.Add(Value("same", 8, null, 1));
        graph.Node.Add(Node("Identity", ["text"], ["same"]));
        return Save(directory, "strings.onnx", graph);
    }

    private static string Save(string directory, string name, GraphProto graph, int opset = 13)
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "InferPool tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        var path = Path.Combine(directory, name);
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private static ValueInfoProto Value(string name, int elementType, params object?[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            shape.Dim.Add(d switch
            {
                null => new TensorShapeProto.Types.Dimension { DimParam = "batch" },
                string symbol => new TensorShapeProto.Types.Dimension { DimParam = symbol },
                var v => new TensorShapeProto.Types.Dimension { DimValue = Convert.ToInt64(v, System.Globalization.CultureInfo.InvariantCulture) },
            });
        }

        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elementType, Shape = shape } } };
    }

    private static TensorProto FloatTensor(string name, long[] dims, float[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = Float };
        tensor.Dims.AddRange(dims);
        tensor.FloatData.AddRange(values);
        return tensor;
    }

    private static NodeProto Node(string op, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = op + "_" + outputs[0] };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        return node;
    }
}
