namespace InferPool.Onnx;

/// <summary>
/// What session builds that run side by side cost in resident memory: the process's growth from the moment the first of
/// them starts to the moment the last ends, divided equally among those that built. One build alone is measured exactly
/// as a build under the build lock is.
/// </summary>
internal sealed class OverlappingBuilds
{
    private readonly Lock _lock = new();
    private readonly List<(string Replica, int Threads)> _members = [];
    private int _running;
    private long _before;

    /// <summary>A build starts; the first of a group measures the process first (freed heap pages given back).</summary>
    public void Enter(string replica, int threads)
    {
        lock (_lock)
        {
            if (_running == 0)
            {
                _members.Clear();
                ProcessMemory.ReturnFreedMemory();
                _before = ProcessMemory.ResidentBytes();
            }

            _running++;
            _members.Add((replica, threads));
        }
    }

    /// <summary>A build ended; when it was the last of its group, each built replica of the group with its share of the growth.</summary>
    public IReadOnlyList<OnnxReplicaInfo> Leave(string replica, bool built)
    {
        lock (_lock)
        {
            _running--;
            if (!built)
            {
                _members.RemoveAll(m => m.Replica == replica);
            }

            if (_running > 0 || _members.Count == 0)
            {
                return [];
            }

            ProcessMemory.ReturnFreedMemory();
            var each = Math.Max(0, ProcessMemory.ResidentBytes() - _before) / _members.Count;
            return [.. _members.Select(m => new OnnxReplicaInfo(m.Replica, m.Threads, each) { FromOptimizedGraph = true })];
        }
    }
}
