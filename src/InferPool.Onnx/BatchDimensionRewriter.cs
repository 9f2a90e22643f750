using Google.Protobuf;
using Onnx;

namespace InferPool.Onnx;

/// <summary>
/// Rewrites a graph whose batch dimension is fixed at 1 so that it is symbolic, through the ONNX protobuf
/// schema (not byte surgery). Whether the result is valid is decided by running it, not by this class:
/// a Reshape with a hard-coded target of 1 survives the rewrite and only a parity run catches it.
/// </summary>
internal static class BatchDimensionRewriter
{
    public const string Symbol = "N";

    /// <summary>The model with the first dimension of every graph input and output made symbolic.</summary>
    /// <exception cref="InvalidDataException">The bytes are not an ONNX model.</exception>
    public static byte[] MakeBatchSymbolic(byte[] model)
    {
        ModelProto proto;
        try
        {
            proto = ModelProto.Parser.ParseFrom(model);
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw new InvalidDataException($"The model is not a valid ONNX protobuf: {ex.Message}", ex);
        }

        var initializers = proto.Graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var input in proto.Graph.Input.Where(i => !initializers.Contains(i.Name)))
        {
            MakeFirstDimensionSymbolic(input);
        }

        foreach (var output in proto.Graph.Output)
        {
            MakeFirstDimensionSymbolic(output);
        }

        // Intermediate shapes recorded with the old batch size would contradict the new one; ONNX Runtime
        // infers them again when they are absent.
        proto.Graph.ValueInfo.Clear();
        return proto.ToByteArray();
    }

    private static void MakeFirstDimensionSymbolic(ValueInfoProto value)
    {
        var shape = value.Type?.TensorType?.Shape;
        if (shape is null || shape.Dim.Count == 0)
        {
            return;
        }

        shape.Dim[0].DimParam = Symbol;
    }
}
