using System.Buffers.Binary;
using System.Runtime.InteropServices;
using InferPool.Onnx.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Cluster;

/// <summary>
/// An item's model outputs as one compact binary value (the results table's <c>outputs</c> column): for each
/// output its element type, rank, dimensions and raw values (little-endian: x64 and arm64 alike), so that any model's outputs (several,
/// of any supported element type and shape) are stored and exported as they came out.
/// </summary>
internal static class TensorCodec
{
    private const byte Version = 1;

    public static byte[] Encode(IReadOnlyList<TensorData> outputs)
    {
        var size = 2;
        foreach (var o in outputs)
        {
            size += 2 + (8 * o.Shape.Length) + 8 + Bytes(o.Values).Length;
        }

        var buffer = new byte[size];
        var at = 0;
        buffer[at++] = Version;
        buffer[at++] = checked((byte)outputs.Count);
        foreach (var o in outputs)
        {
            buffer[at++] = (byte)o.ElementType;
            buffer[at++] = checked((byte)o.Shape.Length);
            foreach (var d in o.Shape)
            {
                BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(at), d);
                at += 8;
            }

            var values = Bytes(o.Values);
            BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(at), values.Length);
            at += 8;
            values.CopyTo(buffer.AsSpan(at));
            at += values.Length;
        }

        return buffer;
    }

    /// <exception cref="InvalidDataException">The value was not written by <see cref="Encode"/>.</exception>
    public static List<TensorData> Decode(byte[] buffer)
    {
        if (buffer.Length < 2 || buffer[0] != Version)
        {
            throw new InvalidDataException("The stored outputs are not in a format this InferPool reads.");
        }

        var outputs = new List<TensorData>(buffer[1]);
        var at = 2;
        for (var i = 0; i < buffer[1]; i++)
        {
            var type = (TensorElementType)buffer[at++];
            var shape = new long[buffer[at++]];
            for (var d = 0; d < shape.Length; d++)
            {
                shape[d] = BinaryPrimitives.ReadInt64LittleEndian(buffer.AsSpan(at));
                at += 8;
            }

            var length = checked((int)BinaryPrimitives.ReadInt64LittleEndian(buffer.AsSpan(at)));
            at += 8;
            var count = shape.Aggregate(1L, (a, d) => a * d);
            var values = TensorData.NewArray(type, checked((int)count));
            buffer.AsSpan(at, length).CopyTo(Bytes(values));
            at += length;
            outputs.Add(new TensorData(type, shape, values));
        }

        return outputs;
    }

    private static Span<byte> Bytes(Array values) => values switch
    {
        float[] a => MemoryMarshal.AsBytes(a.AsSpan()),
        double[] a => MemoryMarshal.AsBytes(a.AsSpan()),
        long[] a => MemoryMarshal.AsBytes(a.AsSpan()),
        int[] a => MemoryMarshal.AsBytes(a.AsSpan()),
        bool[] a => MemoryMarshal.AsBytes(a.AsSpan()),
        Float16[] a => MemoryMarshal.AsBytes(a.AsSpan()),
        // byte[] and sbyte[] are the same to the runtime's type checks: tell them apart by their real type.
        _ when values.GetType() == typeof(sbyte[]) => MemoryMarshal.AsBytes(((sbyte[])values).AsSpan()),
        byte[] a => a.AsSpan(),
        _ => throw new NotSupportedException($"Values of type {values.GetType().Name} cannot be stored."),
    };
}
