using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Onnx.Tensors;

/// <summary>
/// A dense tensor of one of the element types the built-in replica feeds and reads: its values end to end (row-major)
/// in an array of the element type's .NET type, and its shape.
/// </summary>
/// <remarks>
/// The .NET types: float (<see cref="float"/>), double, float16 (<see cref="Float16"/>), int64 (<see cref="long"/>),
/// int32 (<see cref="int"/>), int8 (<see cref="sbyte"/>), uint8 (<see cref="byte"/>) and bool.
/// </remarks>
public sealed class TensorData
{
    /// <summary>Wraps values with a shape.</summary>
    /// <param name="elementType">The element type; one of <see cref="SupportedTypes"/>.</param>
    /// <param name="shape">The dimensions, each 0 or more; their product is the number of values.</param>
    /// <param name="values">An array of the element type's .NET type.</param>
    /// <exception cref="ArgumentException">The type is not supported, the array's type does not match it, or the shape does not fit the values.</exception>
    public TensorData(TensorElementType elementType, long[] shape, Array values)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(values);
        var clr = ClrType(elementType);
        if (values.GetType().GetElementType() != clr || values.Rank != 1)
        {
            throw new ArgumentException($"A {elementType} tensor needs a {clr.Name}[]; got {values.GetType().Name}.", nameof(values));
        }

        var length = 1L;
        foreach (var d in shape)
        {
            if (d < 0)
            {
                throw new ArgumentException($"Shape [{string.Join(",", shape)}] has a negative dimension.", nameof(shape));
            }

            length *= d;
        }

        if (length != values.LongLength)
        {
            throw new ArgumentException($"Shape [{string.Join(",", shape)}] holds {length} values; the array has {values.LongLength}.", nameof(values));
        }

        ElementType = elementType;
        Shape = shape;
        Values = values;
    }

    /// <summary>The element types a tensor may have.</summary>
    public static IReadOnlySet<TensorElementType> SupportedTypes { get; } = new HashSet<TensorElementType>
    {
        TensorElementType.Float, TensorElementType.Double, TensorElementType.Float16, TensorElementType.Int64,
        TensorElementType.Int32, TensorElementType.Int8, TensorElementType.UInt8, TensorElementType.Bool,
    };

    /// <summary>The element type.</summary>
    public TensorElementType ElementType { get; }

    /// <summary>The dimensions.</summary>
    public long[] Shape { get; }

    /// <summary>The values, row-major, in an array of the element type's .NET type.</summary>
    public Array Values { get; }

    /// <summary>The number of values.</summary>
    public int Length => Values.Length;

    /// <summary>A tensor over <paramref name="values"/>.</summary>
    /// <typeparam name="T">One of the supported .NET types.</typeparam>
    /// <param name="values">The values, row-major.</param>
    /// <param name="shape">The dimensions.</param>
    public static TensorData Create<T>(T[] values, params long[] shape)
        where T : unmanaged => new(ElementTypeOf(typeof(T)), shape, values);

    /// <summary>The .NET type that holds one element of <paramref name="elementType"/>.</summary>
    /// <exception cref="NotSupportedException">The type is not one of <see cref="SupportedTypes"/>.</exception>
    public static Type ClrType(TensorElementType elementType) => elementType switch
    {
        TensorElementType.Float => typeof(float),
        TensorElementType.Double => typeof(double),
        TensorElementType.Float16 => typeof(Float16),
        TensorElementType.Int64 => typeof(long),
        TensorElementType.Int32 => typeof(int),
        TensorElementType.Int8 => typeof(sbyte),
        TensorElementType.UInt8 => typeof(byte),
        TensorElementType.Bool => typeof(bool),
        _ => throw new NotSupportedException($"Element type {elementType} is not supported; the built-in replica takes float, double, float16, int64, int32, int8, uint8 and bool tensors."),
    };

    /// <summary>A new array of <paramref name="length"/> elements of <paramref name="elementType"/>, every one <paramref name="fill"/>.</summary>
    /// <param name="elementType">The element type.</param>
    /// <param name="length">How many elements.</param>
    /// <param name="fill">The value of each (converted to the element type); 0 leaves the array as allocated.</param>
    public static Array NewArray(TensorElementType elementType, int length, double fill = 0)
    {
        var array = Array.CreateInstance(ClrType(elementType), length);
        if (fill != 0)
        {
            switch (array)
            {
                case float[] f: Array.Fill(f, (float)fill); break;
                case double[] d: Array.Fill(d, fill); break;
                case Float16[] h: Array.Fill(h, (Float16)(float)fill); break;
                case long[] l: Array.Fill(l, (long)fill); break;
                case int[] i: Array.Fill(i, (int)fill); break;
                case sbyte[] s when s.GetType() == typeof(sbyte[]): Array.Fill(s, (sbyte)fill); break;
                case byte[] b: Array.Fill(b, (byte)fill); break;
                case bool[] t: Array.Fill(t, true); break;
            }
        }

        return array;
    }

    /// <summary>The values as floats (float16 and integers converted; bool as 0 or 1).</summary>
    public float[] ToFloats() => Values switch
    {
        float[] f => f,
        double[] d => Array.ConvertAll(d, v => (float)v),
        Float16[] h => Array.ConvertAll(h, v => (float)v),
        long[] l => Array.ConvertAll(l, v => (float)v),
        int[] i => Array.ConvertAll(i, v => (float)v),
        sbyte[] s when s.GetType() == typeof(sbyte[]) => Array.ConvertAll(s, v => (float)v),
        byte[] b => Array.ConvertAll(b, v => (float)v),
        bool[] t => Array.ConvertAll(t, v => v ? 1f : 0f),
        _ => throw new InvalidOperationException($"Unexpected array {Values.GetType().Name}."),
    };

    /// <summary>The shape as text, e.g. <c>[2,3]</c>.</summary>
    public string ShapeText => "[" + string.Join(",", Shape) + "]";

    /// <inheritdoc/>
    public override string ToString() => $"{ElementType} {ShapeText}";

    internal static TensorElementType ElementTypeOf(Type clr)
    {
        foreach (var type in SupportedTypes)
        {
            if (ClrType(type) == clr)
            {
                return type;
            }
        }

        throw new NotSupportedException($"{clr.Name} is not a supported tensor element type.");
    }

    /// <summary>An ONNX Runtime tensor over <paramref name="values"/> (no copy; the array must outlive the value).</summary>
    /// <param name="values">An array of a supported element type.</param>
    /// <param name="shape">The tensor's dimensions.</param>
    /// <exception cref="NotSupportedException">The array's element type is not supported.</exception>
    public static OrtValue ToOrtValue(Array values, long[] shape) => (values ?? throw new ArgumentNullException(nameof(values))) switch
    {
        float[] f => OrtValue.CreateTensorValueFromMemory(f, shape),
        double[] d => OrtValue.CreateTensorValueFromMemory(d, shape),
        Float16[] h => OrtValue.CreateTensorValueFromMemory(h, shape),
        long[] l => OrtValue.CreateTensorValueFromMemory(l, shape),
        int[] i => OrtValue.CreateTensorValueFromMemory(i, shape),
        sbyte[] s when s.GetType() == typeof(sbyte[]) => OrtValue.CreateTensorValueFromMemory(s, shape),
        byte[] b => OrtValue.CreateTensorValueFromMemory(b, shape),
        bool[] t => OrtValue.CreateTensorValueFromMemory(t, shape),
        _ => throw new NotSupportedException($"Unexpected array {values.GetType().Name}."),
    };

    /// <summary>Copies an ONNX Runtime tensor's values and shape out.</summary>
    /// <param name="value">A dense tensor of a supported element type.</param>
    /// <exception cref="NotSupportedException">The tensor's element type is not supported.</exception>
    public static TensorData FromOrtValue(OrtValue value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var info = value.GetTensorTypeAndShape();
        var shape = info.Shape;
        Array values = info.ElementDataType switch
        {
            TensorElementType.Float => value.GetTensorDataAsSpan<float>().ToArray(),
            TensorElementType.Double => value.GetTensorDataAsSpan<double>().ToArray(),
            TensorElementType.Float16 => value.GetTensorDataAsSpan<Float16>().ToArray(),
            TensorElementType.Int64 => value.GetTensorDataAsSpan<long>().ToArray(),
            TensorElementType.Int32 => value.GetTensorDataAsSpan<int>().ToArray(),
            TensorElementType.Int8 => value.GetTensorDataAsSpan<sbyte>().ToArray(),
            TensorElementType.UInt8 => value.GetTensorDataAsSpan<byte>().ToArray(),
            TensorElementType.Bool => value.GetTensorDataAsSpan<bool>().ToArray(),
            var other => throw new NotSupportedException($"The model returned a {other} tensor, which the built-in replica does not read."),
        };
        return new TensorData(info.ElementDataType, shape, values);
    }
}
