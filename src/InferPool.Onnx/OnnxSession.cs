using Microsoft.ML.OnnxRuntime;

namespace InferPool.Onnx;

/// <summary>
/// One replica's session with its reusable buffers: the batch's input tensor and the outputs are written
/// into arrays kept across calls, so a steady-state call allocates only the per-item result arrays.
/// </summary>
internal sealed class OnnxSession : IDisposable
{
    private readonly InferenceSession _session;
    private readonly OnnxModel _model;
    private readonly string[] _inputNames;
    private readonly string[] _outputNames;
    private readonly int _inputLength;
    private readonly int[] _outputLengths;
    private readonly bool _preallocateOutputs;
    private readonly RunOptions _runOptions = new();
    private float[] _input = [];
    private float[][] _outputs;

    public OnnxSession(InferenceSession session, OnnxModel model)
    {
        _session = session;
        _model = model;
        _inputNames = [model.Input.Name];
        _outputNames = [.. model.Outputs.Select(o => o.Name)];
        _inputLength = model.Input.ItemLength;
        _outputLengths = [.. model.Outputs.Select(o => o.ItemLength)];
        _preallocateOutputs = _outputLengths.All(l => l > 0);
        _outputs = [.. _outputLengths.Select(_ => Array.Empty<float>())];
    }

    public float[][][] Run(IReadOnlyList<float[]> items, CancellationToken cancellationToken)
    {
        for (var i = 0; i < items.Count; i++)
        {
            if (items[i] is null || items[i].Length != _inputLength)
            {
                throw new ArgumentException(
                    $"An input has {items[i]?.Length ?? 0} values; model input {_model.Input} takes {_inputLength} per item.");
            }
        }

        var results = new float[items.Count][][];
        if (_model.MaxBatchSize == 1)
        {
            for (var i = 0; i < items.Count; i++)
            {
                RunBatch(items, i, 1, results, cancellationToken);
            }
        }
        else
        {
            RunBatch(items, 0, items.Count, results, cancellationToken);
        }

        return results;
    }

    public void Dispose()
    {
        _runOptions.Dispose();
        _session.Dispose();
    }

    private void RunBatch(IReadOnlyList<float[]> items, int start, int count, float[][][] results, CancellationToken cancellationToken)
    {
        var needed = count * _inputLength;
        if (_input.Length < needed)
        {
            _input = GC.AllocateUninitializedArray<float>(needed, pinned: true);
        }

        for (var i = 0; i < count; i++)
        {
            items[start + i].CopyTo(_input, i * _inputLength);
        }

        using var registration = cancellationToken.Register(static o => ((RunOptions)o!).Terminate = true, _runOptions);
        try
        {
            using var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _input.AsMemory(0, needed), [count, .. _model.Input.ItemShape]);
            if (_preallocateOutputs)
            {
                RunIntoBuffers(input, start, count, results);
            }
            else
            {
                RunAllocating(input, start, count, results);
            }
        }
        catch (OnnxRuntimeException) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException("The ONNX Runtime call was terminated.", cancellationToken);
        }
        finally
        {
            _runOptions.Terminate = false;
        }
    }

    private void RunIntoBuffers(OrtValue input, int start, int count, float[][][] results)
    {
        var outputs = new OrtValue[_outputNames.Length];
        try
        {
            for (var o = 0; o < outputs.Length; o++)
            {
                var needed = count * _outputLengths[o];
                if (_outputs[o].Length < needed)
                {
                    _outputs[o] = GC.AllocateUninitializedArray<float>(needed, pinned: true);
                }

                outputs[o] = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _outputs[o].AsMemory(0, needed), [count, .. _model.Outputs[o].ItemShape]);
            }

            _session.Run(_runOptions, _inputNames, [input], _outputNames, outputs);
            for (var i = 0; i < count; i++)
            {
                var perItem = new float[_outputNames.Length][];
                for (var o = 0; o < perItem.Length; o++)
                {
                    perItem[o] = _outputs[o].AsSpan(i * _outputLengths[o], _outputLengths[o]).ToArray();
                }

                results[start + i] = perItem;
            }
        }
        finally
        {
            foreach (var value in outputs)
            {
                value?.Dispose();
            }
        }
    }

    private void RunAllocating(OrtValue input, int start, int count, float[][][] results)
    {
        using var outputs = _session.Run(_runOptions, _inputNames, [input], _outputNames);
        var spans = outputs.Select(v => v.GetTensorDataAsSpan<float>().ToArray()).ToArray();
        for (var i = 0; i < count; i++)
        {
            var perItem = new float[spans.Length][];
            for (var o = 0; o < spans.Length; o++)
            {
                var per = spans[o].Length / count;
                perItem[o] = spans[o].AsSpan(i * per, per).ToArray();
            }

            results[start + i] = perItem;
        }
    }
}
