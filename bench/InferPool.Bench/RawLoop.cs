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

    public RawLoop(string model, int sessions, int threads, float[][] tensors)
    {
        _tensors = tensors;
        Name = $"raw ORT loop, pre-decoded: {sessions} session(s) x {threads} thread(s)";
        _sessions = new InferenceSession[sessions];
        for (var i = 0; i < sessions; i++)
        {
            using var options = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
            _sessions[i] = new InferenceSession(model, options);
            Run(_sessions[i], tensors[0]);
        }
    }

    public string Name { get; }

    public double Measure(int items)
    {
        var next = -1;
        var started = Stopwatch.GetTimestamp();
        var workers = _sessions.Select(session => new Thread(() =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < items)
            {
                Run(session, _tensors[i % _tensors.Length]);
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

        return items / Stopwatch.GetElapsedTime(started).TotalSeconds;
    }

    public void Dispose()
    {
        foreach (var s in _sessions)
        {
            s.Dispose();
        }
    }

    private static void Run(InferenceSession session, float[] tensor)
    {
        using var input = OrtValue.CreateTensorValueFromMemory(tensor, [1, 3, 224, 224]);
        using var runOptions = new RunOptions();
        using var output = session.Run(runOptions, ["Input247"], [input], ["Pooling395_Output_0"]);
    }
}
