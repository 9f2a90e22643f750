using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Onnx.Tensors;

/// <summary>
/// One replica's session for a model with any inputs and outputs: stacks items along the batch dimension (padding or
/// grouping items whose other dimensions differ, as <see cref="TensorBatching"/> says), runs the calls, and cuts each
/// item's rows (and its own size, where it was padded) back out of every output.
/// </summary>
internal sealed class OnnxTensorSession : IDisposable
{
    private readonly InferenceSession _session;
    private readonly OnnxModel _model;
    private readonly TensorBatching _batching;
    private readonly string[] _inputNames;
    private readonly string[] _outputNames;
    private readonly RunOptions _runOptions = new();

    /// <summary>Per input, the item dimensions (after the batch) that are symbolic.</summary>
    private readonly bool[][] _symbolic;

    /// <summary>Per output and item dimension: the (input, item dimension) whose size it takes, or (-1, -1).</summary>
    private readonly (int Input, int Dimension)[][] _outputSource;

    private readonly bool _canPad;

    /// <summary>Set once an output is seen without a batch dimension: from then on, every item runs alone.</summary>
    private bool _runAlone;

    public OnnxTensorSession(InferenceSession session, OnnxModel model, TensorBatching batching)
    {
        _session = session;
        _model = model;
        _batching = batching;
        _inputNames = [.. model.Inputs.Select(i => i.Name)];
        _outputNames = [.. model.Outputs.Select(o => o.Name)];
        _symbolic = [.. model.Inputs.Select(i => i.ItemShape.Select(d => d < 0).ToArray())];
        _outputSource = [.. model.Outputs.Select(o => Enumerable.Range(1, Math.Max(0, o.Shape.Count - 1)).Select(d => SourceOf(model, o.DimensionName(d))).ToArray())];
        _canPad = PaddingIsSafe(model, batching);
        _runAlone = model.MaxBatchSize == 1;
    }

    public TensorOutputs[] Run(IReadOnlyList<TensorItem> items, CancellationToken cancellationToken)
    {
        foreach (var item in items)
        {
            _model.CheckItem(item);
        }

        var results = new TensorOutputs[items.Count];
        if (_runAlone)
        {
            for (var i = 0; i < items.Count; i++)
            {
                RunCall(items, [i], results, cancellationToken);
            }

            return results;
        }

        foreach (var call in PlanCalls(items))
        {
            if (!RunCall(items, call, results, cancellationToken))
            {
                // An output without a batch dimension: the rows of several items cannot be told apart.
                foreach (var index in call)
                {
                    RunCall(items, [index], results, cancellationToken);
                }
            }
        }

        return results;
    }

    public void Dispose()
    {
        _runOptions.Dispose();
        _session.Dispose();
    }

    private static (int, int) SourceOf(OnnxModel model, string? name)
    {
        if (name is null)
        {
            return (-1, -1);
        }

        for (var i = 0; i < model.Inputs.Count; i++)
        {
            for (var d = 1; d < model.Inputs[i].Shape.Count; d++)
            {
                if (model.Inputs[i].DimensionName(d) == name)
                {
                    return (i, d - 1);
                }
            }
        }

        return (-1, -1);
    }

    private static bool PaddingIsSafe(OnnxModel model, TensorBatching batching)
    {
        var named = new HashSet<string>(StringComparer.Ordinal);
        foreach (var input in model.Inputs)
        {
            for (var d = 1; d < input.Shape.Count; d++)
            {
                if (input.Shape[d] >= 0)
                {
                    continue;
                }

                if (!batching.PadValues.ContainsKey(input.Name) || input.DimensionName(d) is not { } name)
                {
                    return false;
                }

                named.Add(name);
            }
        }

        return model.Outputs.All(o => Enumerable.Range(1, Math.Max(0, o.Shape.Count - 1)).All(d => o.Shape[d] >= 0 || (o.DimensionName(d) is { } n && named.Contains(n))));
    }

    /// <summary>An item's length: the largest product, over its inputs, of its symbolic dimensions.</summary>
    private long Length(TensorItem item)
    {
        long longest = 1;
        for (var i = 0; i < item.Inputs.Count; i++)
        {
            var rowShape = item.RowShape(i);
            long product = 1;
            for (var d = 0; d < rowShape.Length; d++)
            {
                if (_symbolic[i][d])
                {
                    product *= rowShape[d];
                }
            }

            longest = Math.Max(longest, product);
        }

        return longest;
    }

    private static bool SameShape(TensorItem a, TensorItem b)
    {
        for (var i = 0; i < a.Inputs.Count; i++)
        {
            if (!a.RowShape(i).SequenceEqual(b.RowShape(i)))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The calls for a batch: item indexes per call.</summary>
    private List<List<int>> PlanCalls(IReadOnlyList<TensorItem> items)
    {
        var groups = new List<List<int>>();
        if (Enumerable.Range(1, items.Count - 1).All(i => SameShape(items[0], items[i])))
        {
            groups.Add([.. Enumerable.Range(0, items.Count)]);
        }
        else if (_canPad)
        {
            var lengths = items.Select(Length).ToArray();
            groups.Add([.. Enumerable.Range(0, items.Count).OrderBy(i => lengths[i])]);
        }
        else
        {
            foreach (var i in Enumerable.Range(0, items.Count))
            {
                var group = groups.FirstOrDefault(g => SameShape(items[g[0]], items[i]));
                if (group is null)
                {
                    groups.Add([i]);
                }
                else
                {
                    group.Add(i);
                }
            }
        }

        if (_batching.MaxBatchTokens is not { } budget)
        {
            return groups;
        }

        var calls = new List<List<int>>();
        foreach (var group in groups)
        {
            var call = new List<int>();
            long rows = 0;
            long longest = 0;
            foreach (var index in group)
            {
                var length = Length(items[index]);
                var grown = (rows + items[index].Rows) * Math.Max(longest, length);
                if (call.Count > 0 && grown > budget)
                {
                    calls.Add(call);
                    (call, rows, longest) = ([], 0, 0);
                }

                call.Add(index);
                rows += items[index].Rows;
                longest = Math.Max(longest, length);
            }

            calls.Add(call);
        }

        return calls;
    }

    /// <summary>Runs one call; false when an output has no batch dimension and the call held several items.</summary>
    private bool RunCall(IReadOnlyList<TensorItem> items, List<int> call, TensorOutputs[] results, CancellationToken cancellationToken)
    {
        var rows = call.Sum(i => items[i].Rows);
        var padded = new long[_inputNames.Length][];
        var inputs = new OrtValue[_inputNames.Length];
        using var registration = cancellationToken.Register(static o => ((RunOptions)o!).Terminate = true, _runOptions);
        try
        {
            for (var i = 0; i < inputs.Length; i++)
            {
                padded[i] = PaddedShape(items, call, i);
                inputs[i] = TensorData.ToOrtValue(Stack(items, call, i, padded[i], rows), [rows, .. padded[i]]);
            }

            using var outputs = _session.Run(_runOptions, _inputNames, inputs, _outputNames);
            var shapes = outputs.Select(v => v.GetTensorTypeAndShape()).ToArray();
            if (shapes.Any(v => v.Shape.Length == 0 || v.Shape[0] != rows))
            {
                if (call.Count > 1)
                {
                    _runAlone = true;
                    return false;
                }

                // One item alone: its outputs are the whole outputs.
                results[call[0]] = new TensorOutputs([.. outputs.Select(TensorData.FromOrtValue)], items[call[0]].Truncated);
                return true;
            }

            // Every item's part is cut straight out of ONNX Runtime's buffers (or reduced there).
            var perItem = call.Select(_ => new TensorData[outputs.Count]).ToArray();
            for (var o = 0; o < outputs.Count; o++)
            {
                long row = 0;
                for (var k = 0; k < call.Count; k++)
                {
                    var item = items[call[k]];
                    perItem[k][o] = Slice(outputs[o], shapes[o], o, item, row);
                    row += item.Rows;
                }
            }

            for (var k = 0; k < call.Count; k++)
            {
                results[call[k]] = new TensorOutputs(perItem[k], items[call[k]].Truncated);
            }

            return true;
        }
        catch (OnnxRuntimeException) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException("The ONNX Runtime call was terminated.", cancellationToken);
        }
        finally
        {
            _runOptions.Terminate = false;
            foreach (var value in inputs)
            {
                value?.Dispose();
            }
        }
    }

    private static long[] PaddedShape(IReadOnlyList<TensorItem> items, List<int> call, int input)
    {
        var shape = items[call[0]].RowShape(input).ToArray();
        foreach (var index in call)
        {
            var rowShape = items[index].RowShape(input);
            for (var d = 0; d < shape.Length; d++)
            {
                shape[d] = Math.Max(shape[d], rowShape[d]);
            }
        }

        return shape;
    }

    /// <summary>Input <paramref name="input"/> of the call's items, stacked along the batch dimension and padded to <paramref name="padded"/>.</summary>
    private Array Stack(IReadOnlyList<TensorItem> items, List<int> call, int input, long[] padded, long rows) => _model.Inputs[input].ElementType switch
    {
        TensorElementType.Float => Stack<float>(items, call, input, padded, rows),
        TensorElementType.Double => Stack<double>(items, call, input, padded, rows),
        TensorElementType.Float16 => Stack<Float16>(items, call, input, padded, rows),
        TensorElementType.Int64 => Stack<long>(items, call, input, padded, rows),
        TensorElementType.Int32 => Stack<int>(items, call, input, padded, rows),
        TensorElementType.Int8 => Stack<sbyte>(items, call, input, padded, rows),
        TensorElementType.UInt8 => Stack<byte>(items, call, input, padded, rows),
        TensorElementType.Bool => Stack<bool>(items, call, input, padded, rows),
        var other => throw new NotSupportedException($"Input {_inputNames[input]} has element type {other}, which the built-in replica does not feed."),
    };

    private T[] Stack<T>(IReadOnlyList<TensorItem> items, List<int> call, int input, long[] padded, long rows)
        where T : unmanaged
    {
        var rowLength = Product(padded);
        var needsPad = call.Any(i => !items[i].RowShape(input).SequenceEqual(padded));
        var pad = needsPad ? _batching.PadValues.GetValueOrDefault(_inputNames[input]) : 0;
        var data = (T[])TensorData.NewArray(_model.Inputs[input].ElementType, checked((int)(rows * rowLength)), pad);
        long row = 0;
        foreach (var index in call)
        {
            var item = items[index];
            var values = (T[])item.Inputs[input].Values;
            var rowShape = item.RowShape(input);
            if (rowShape.SequenceEqual(padded))
            {
                values.CopyTo(data, row * rowLength);
            }
            else
            {
                var itemRow = (int)Product(rowShape);
                for (var r = 0; r < item.Rows; r++)
                {
                    CopyRegion<T>(values.AsSpan(r * itemRow), rowShape, data.AsSpan((int)((row + r) * rowLength)), padded, rowShape);
                }
            }

            row += item.Rows;
        }

        return data;
    }

    /// <summary>The item's own dimensions of an output row: the output's, with padded dimensions cut back to the item's size.</summary>
    private long[] OwnShape(ReadOnlySpan<long> outRow, int output, TensorItem item)
    {
        var own = outRow.ToArray();
        var sources = _outputSource[output];
        for (var d = 0; d < own.Length && d < sources.Length; d++)
        {
            if (sources[d].Input >= 0)
            {
                own[d] = item.RowShape(sources[d].Input)[sources[d].Dimension];
            }
        }

        return own;
    }

    /// <summary>An item's part of an output, read from ONNX Runtime's buffer.</summary>
    private TensorData Slice(OrtValue value, OrtTensorTypeAndShapeInfo info, int output, TensorItem item, long firstRow) => info.ElementDataType switch
    {
        TensorElementType.Float => Slice(value.GetTensorDataAsSpan<float>(), info, output, item, firstRow),
        TensorElementType.Double => Slice(value.GetTensorDataAsSpan<double>(), info, output, item, firstRow),
        TensorElementType.Float16 => Slice(value.GetTensorDataAsSpan<Float16>(), info, output, item, firstRow),
        TensorElementType.Int64 => Slice(value.GetTensorDataAsSpan<long>(), info, output, item, firstRow),
        TensorElementType.Int32 => Slice(value.GetTensorDataAsSpan<int>(), info, output, item, firstRow),
        TensorElementType.Int8 => Slice(value.GetTensorDataAsSpan<sbyte>(), info, output, item, firstRow),
        TensorElementType.UInt8 => Slice(value.GetTensorDataAsSpan<byte>(), info, output, item, firstRow),
        TensorElementType.Bool => Slice(value.GetTensorDataAsSpan<bool>(), info, output, item, firstRow),
        var other => throw new NotSupportedException($"The model returned a {other} tensor for {_outputNames[output]}, which the built-in replica does not read."),
    };

    /// <summary>
    /// An item's rows of output <paramref name="output"/>, cut back to its own size on dimensions that were padded; a float
    /// output with a reducer in <see cref="TensorBatching.Reducers"/> is reduced where it lies, for an item of one row
    /// whose part is contiguous.
    /// </summary>
    private TensorData Slice<T>(ReadOnlySpan<T> values, OrtTensorTypeAndShapeInfo info, int output, TensorItem item, long firstRow)
        where T : unmanaged
    {
        var outRow = info.Shape.AsSpan(1);
        var own = OwnShape(outRow, output, item);
        var rowLength = (int)Product(outRow);
        var ownLength = (int)Product(own);
        if (typeof(T) == typeof(float) && item.Rows == 1 && own.Length > 0 && own.AsSpan(1).SequenceEqual(outRow[1..]) && _batching.Reducers.TryGetValue(_outputNames[output], out var reduce))
        {
            // The item's part is its first own[0] entries along the cut dimension, end to end: reduced where it lies.
            var rows = System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(values.Slice((int)(firstRow * rowLength), ownLength));
            var reduced = reduce(rows, (int)own[0], ownLength / Math.Max(1, (int)own[0]));
            return TensorData.Create(reduced, reduced.Length);
        }

        var data = new T[item.Rows * ownLength];
        if (own.AsSpan().SequenceEqual(outRow))
        {
            values.Slice((int)(firstRow * rowLength), (int)(item.Rows * rowLength)).CopyTo(data);
        }
        else
        {
            for (var r = 0; r < item.Rows; r++)
            {
                CopyRegion(values[(int)((firstRow + r) * rowLength)..], outRow, data.AsSpan(r * ownLength), own, own);
            }
        }

        return new TensorData(info.ElementDataType, item.HasBatchDimension ? [item.Rows, .. own] : own, data);
    }

    /// <summary>Copies the block <paramref name="region"/> between two row-major spans of the given shapes, both from their start.</summary>
    private static void CopyRegion<T>(ReadOnlySpan<T> from, ReadOnlySpan<long> fromShape, Span<T> to, ReadOnlySpan<long> toShape, ReadOnlySpan<long> region)
    {
        if (region.Length <= 1)
        {
            from[..(region.Length == 0 ? 1 : (int)region[0])].CopyTo(to);
            return;
        }

        var fromStride = (int)Product(fromShape[1..]);
        var toStride = (int)Product(toShape[1..]);
        for (var i = 0; i < region[0]; i++)
        {
            CopyRegion(from[(i * fromStride)..], fromShape[1..], to[(i * toStride)..], toShape[1..], region[1..]);
        }
    }

    private static long Product(ReadOnlySpan<long> shape)
    {
        long product = 1;
        foreach (var d in shape)
        {
            product *= d;
        }

        return product;
    }
}
