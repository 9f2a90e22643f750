using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;

namespace InferPool.Bench;

/// <summary>
/// The hand-written baseline: S sessions with T intra-op threads each, S threads pulling pre-decoded tensors
/// from a shared counter, one image per call. Sessions are built and warmed up before timing.
/// </summary>
internal sealed class RawLoop : IDisposable
{
    private readonly InferenceSession[] _sessions;
    private readonly float[][] _tensors;

    private readonly int _batch;

    public RawLoop(byte[] model, int sessions, int threads, int batch, float[][] tensors)
    {
        _tensors = tensors;
        _batch = batch;
        Name = $"raw ORT loop, pre-decoded: {sessions} session(s) x {threads} thread(s), batch {batch}";
        _sessions = new InferenceSession[sessions];
        for (var i = 0; i < sessions; i++)
        {
            using var options = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
            _sessions[i] = new InferenceSession(model, options);
            Run(_sessions[i], tensors, 0, batch);
        }
    }

    public string Name { get; }

    public Measurement Measure(int items)
    {
        var next = -1;
        var cpu = CpuTime.Self();
        var started = Stopwatch.GetTimestamp();
        var workers = _sessions.Select(session => new Thread(() =>
        {
            int i;
            while ((i = Interlocked.Add(ref next, _batch) - _batch + 1) < items)
            {
                Run(session, _tensors, i, Math.Min(_batch, items - i));
            }
        })).ToArray();
        foreach (var w in workers)
        {
            w.Start();
        }

        foreach (var w in workers)
        {
            w.Join();
        }

        var elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds;
        return new Measurement(items / elapsed, (CpuTime.Self() - cpu).TotalMilliseconds / items);
    }

    public void Dispose()
    {
        foreach (var s in _sessions)
        {
            s.Dispose();
        }
    }

    private static void Run(InferenceSession session, float[][] tensors, int first, int count)
    {
        var length = tensors[0].Length;
        var batch = new float[count * length];
        for (var k = 0; k < count; k++)
        {
            tensors[(first + k) % tensors.Length].CopyTo(batch, k * length);
        }

        using var input = OrtValue.CreateTensorValueFromMemory(batch, [count, 3, 224, 224]);
        using var runOptions = new RunOptions();
        using var output = session.Run(runOptions, ["Input247"], [input], ["Pooling395_Output_0"]);
    }
}

/// <summary>One timed run of a way: items per second, and the CPU time it took per item (null where it cannot be read).</summary>
internal readonly record struct Measurement(double Rate, double? CpuMsPerItem);
