using Google.Protobuf;
using Onnx;

namespace InferPool.Onnx.Tests;

/// <summary>Small real ONNX models written with the ONNX protobuf schema, for tests that need exact, fast models.</summary>
internal static class TinyModels
{
    private const int Float = 1;
    private const int Int64 = 7;

    /// <summary>y = 2x + 1 over [batch, 4]; the batch dimension is fixed at 1 unless <paramref name="symbolicBatch"/>.</summary>
    public static string Affine(string directory, bool symbolicBatch = false)
    {
        var graph = new GraphProto { Name = "affine" };
        graph.Input.Add(Value("x", Float, symbolicBatch ? null : 1, 4));
        graph.Output.Add(Value("y", Float, symbolicBatch ? null : 1, 4));
        graph.Initializer.Add(FloatTensor("two", [1], [2f]));
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

    /// <summary>Two inputs: not something the built-in replica feeds.</summary>
    public static string TwoInputs(string directory)
    {
        var graph = new GraphProto { Name = "two" };
        graph.Input.Add(Value("a", Float, null, 4));
        graph.Input.Add(Value("b", Float, null, 4));
        graph.Output.Add(Value("y", Float, null, 4));
        graph.Node.Add(Node("Add", ["a", "b"], ["y"]));
        return Save(directory, "two-inputs.onnx", graph);
    }

    private static string Save(string directory, string name, GraphProto graph, int opset = 13)
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "InferPool tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        var path = Path.Combine(directory, name);
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private static ValueInfoProto Value(string name, int elementType, params long?[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            shape.Dim.Add(d is { } v ? new TensorShapeProto.Types.Dimension { DimValue = v } : new TensorShapeProto.Types.Dimension { DimParam = "batch" });
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
