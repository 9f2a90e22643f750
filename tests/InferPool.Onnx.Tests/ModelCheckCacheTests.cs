using InferPool.Devices;

namespace InferPool.Onnx.Tests;

/// <summary>The second load of a model file reuses what the first one checked: no checking session, no parity run.</summary>
public sealed class ModelCheckCacheTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("inferpool-cache-").FullName;

    private string Cache => Path.Combine(_dir, "cache");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Load_Twice_SecondUsesTheCachedCheckAndRunsTheSame()
    {
        var path = TinyModels.Affine(_dir, symbolicBatch: false);

        var first = OnnxModel.Load(path, cacheDirectory: Cache);
        var second = OnnxModel.Load(path, cacheDirectory: Cache);

        Assert.False(first.CheckWasCached);
        Assert.True(second.CheckWasCached);
        Assert.Equal(BatchingSupport.Rewritten, second.Batching);
        Assert.Equal(first.BatchingReport, second.BatchingReport);
        Assert.Equal(first.Inputs.Select(i => i.ToString()), second.Inputs.Select(i => i.ToString()));
        Assert.Equal(first.Outputs.Select(o => o.ToString()), second.Outputs.Select(o => o.ToString()));
        Assert.Equal(first.Inputs.Select(i => string.Join(",", i.DimensionNames)), second.Inputs.Select(i => string.Join(",", i.DimensionNames)));
        Assert.Equal(first.SessionBytes, second.SessionBytes);

        // The cached model batches like the checked one.
        using var factory = new OnnxReplicaFactory(second);
        var results = new List<Results.InferenceResult<float[], float[][]>>();
        await foreach (var r in InferencePool.RunAsync(new[] { new float[] { 1, 2, 3, 4 }, [0, 0, 0, 0] }.ToAsyncEnumerable(), factory, new InferencePoolOptions { MaxBatchSize = 2 }))
        {
            results.Add(r);
        }

        Assert.Equal([3f, 5, 7, 9], results[0].Value![0]);
    }

    [Fact]
    public void Load_RemembersTheFilesHashByPathSizeAndTime_AndHashesAgainWhenTheFileIsRewritten()
    {
        var path = TinyModels.Affine(_dir, symbolicBatch: false);
        static byte[] Hash(byte[] bytes) => System.Security.Cryptography.SHA256.HashData(bytes);

        var first = OnnxModel.Load(path, cacheDirectory: Cache);
        Assert.Equal(Convert.ToHexStringLower(Hash(File.ReadAllBytes(path))), first.Sha256);
        var remembered = Assert.Single(Directory.GetFiles(Path.Combine(Cache, "files")));
        Assert.Contains(first.Sha256, File.ReadAllText(remembered), StringComparison.Ordinal);

        // Another model written to the same path: its time changes, so its hash is computed, not remembered.
        TinyModels.Affine(_dir, symbolicBatch: true);
        File.SetLastWriteTimeUtc(path, File.GetLastWriteTimeUtc(path).AddSeconds(1));
        var second = OnnxModel.Load(path, cacheDirectory: Cache);
        Assert.Equal(Convert.ToHexStringLower(Hash(File.ReadAllBytes(path))), second.Sha256);
        Assert.NotEqual(first.Sha256, second.Sha256);
        Assert.False(second.CheckWasCached);
    }

    [Fact]
    public async Task CpuSessions_SaveTheirOptimizedGraph_LaterBuildsLoadItAndComputeTheSame_ADamagedOneIsRebuilt()
    {
        var path = TinyModels.Affine(_dir, symbolicBatch: true);
        var slot = ReplicaPlan.Cpu(1).Slots[0];
        async Task<(float[] Output, OnnxReplicaInfo Info)> RunOnceAsync()
        {
            using var factory = new OnnxReplicaFactory(OnnxModel.Load(path, cacheDirectory: Cache));
            await using var replica = await factory.CreateAsync(slot);
            var outcome = Assert.Single(await replica.InferAsync([[1, -2, 3.5f, 0]]));
            return (outcome.Value![0], Assert.Single(factory.Replicas));
        }

        var first = await RunOnceAsync();
        var saved = Assert.Single(Directory.GetFiles(Cache, "*.optimized.onnx"));
        var second = await RunOnceAsync();
        File.WriteAllText(saved, "not a model");
        var third = await RunOnceAsync();

        Assert.Equal([3f, -3, 8, 1], first.Output);
        Assert.False(first.Info.FromOptimizedGraph);
        Assert.True(second.Info.FromOptimizedGraph);
        Assert.Equal(first.Output, second.Output);
        Assert.False(third.Info.FromOptimizedGraph); // the damaged graph was dropped and the model optimized again
        Assert.Equal(first.Output, third.Output);
        Assert.NotEqual("not a model", File.ReadAllText(Assert.Single(Directory.GetFiles(Cache, "*.optimized.onnx")))[..11]);
    }

    [Fact]
    public void Load_Cached_ReadsTheFileWhenASessionFirstNeedsIt_AndRefusesOneChangedSinceTheLoad()
    {
        var path = TinyModels.Affine(_dir, symbolicBatch: false);
        var first = OnnxModel.Load(path, cacheDirectory: Cache);
        var unchanged = OnnxModel.Load(path, cacheDirectory: Cache);
        var changed = OnnxModel.Load(path, cacheDirectory: Cache);
        Assert.True(changed.CheckWasCached);
        Assert.Equal(first.SessionBytes, unchanged.SessionBytes); // read and rewritten on demand, as the check rewrote it

        // y = 3x + 1 at the same path after the load: the load's sessions must not quietly get another model.
        TinyModels.Affine(_dir, symbolicBatch: false, scale: 3f);
        File.SetLastWriteTimeUtc(path, File.GetLastWriteTimeUtc(path).AddSeconds(1));
        var error = Assert.Throws<InvalidDataException>(() => changed.SessionBytes);
        Assert.Contains(path, error.Message, StringComparison.Ordinal);
        Assert.Contains("changed after it was loaded", error.Message, StringComparison.Ordinal);

        // The same bytes written again (a new time, the same content) are still the checked model.
        var rewrittenIdentically = OnnxModel.Load(path, cacheDirectory: Cache);
        TinyModels.Affine(_dir, symbolicBatch: false, scale: 3f);
        File.SetLastWriteTimeUtc(path, File.GetLastWriteTimeUtc(path).AddSeconds(2));
        Assert.NotEmpty(rewrittenIdentically.SessionBytes);
    }

    [Fact]
    public async Task CpuSessions_FromTheSavedGraph_AreBuiltSideBySide_EachMeasured()
    {
        var path = TinyModels.Affine(_dir, symbolicBatch: true);
        var plan = ReplicaPlan.Cpu(3);
        using (var saving = new OnnxReplicaFactory(OnnxModel.Load(path, cacheDirectory: Cache)))
        {
            await using var replica = await saving.CreateAsync(plan.Slots[0]);
        }

        using var factory = new OnnxReplicaFactory(OnnxModel.Load(path, cacheDirectory: Cache));
        var replicas = await Task.WhenAll(plan.Slots.Select(slot => factory.CreateAsync(slot).AsTask()));
        foreach (var replica in replicas)
        {
            var outcome = Assert.Single(await replica.InferAsync([[1, -2, 3.5f, 0]]));
            Assert.Equal(new[] { 3f, -3, 8, 1 }, outcome.Value![0]);
            await replica.DisposeAsync();
        }

        Assert.Equal(plan.Slots.Select(s => s.Name), factory.Replicas.Select(r => r.Replica));
        Assert.All(factory.Replicas, r => Assert.True(r.FromOptimizedGraph));
        Assert.All(factory.Replicas, r => Assert.True(r.ResidentBytes >= 0));
    }

    [Fact]
    public async Task CpuSessions_WhoseGraphCannotBeSaved_AreBuiltAllTheSame()
    {
        var path = TinyModels.Affine(_dir, symbolicBatch: true);
        var slot = ReplicaPlan.Cpu(1).Slots[0];

        // A cache folder that cannot exist (its parent is a file), and one where the graph's file cannot be written
        // (a folder stands where ONNX Runtime would write it).
        var model = OnnxModel.Load(path, cacheDirectory: Cache);
        Directory.CreateDirectory(ModelCheckCache.OptimizedGraphFile(Cache, model.Sha256) + $".{Environment.ProcessId}.tmp");
        foreach (var cache in new[] { Path.Combine(path, "cache"), Cache })
        {
            using var factory = new OnnxReplicaFactory(OnnxModel.Load(path, cacheDirectory: cache));
            await using var replica = await factory.CreateAsync(slot);
            var outcome = Assert.Single(await replica.InferAsync([[1, -2, 3.5f, 0]]));
            Assert.Equal(new[] { 3f, -3, 8, 1 }, outcome.Value![0]);
            Assert.False(Assert.Single(factory.Replicas).FromOptimizedGraph);
        }

        Assert.Empty(Directory.GetFiles(Cache, "*.optimized.onnx"));
    }

    [Fact]
    public void Load_ChangedFileOrDamagedCache_ChecksAgain()
    {
        var path = TinyModels.Mixed(_dir);
        OnnxModel.Load(path, cacheDirectory: Cache);
        foreach (var file in Directory.GetFiles(Cache))
        {
            File.WriteAllText(file, "{ not json");
        }

        var damaged = OnnxModel.Load(path, cacheDirectory: Cache);
        var other = OnnxModel.Load(TinyModels.Sequence(_dir), cacheDirectory: Cache);
        var off = OnnxModel.Load(path, cacheDirectory: "");

        Assert.False(damaged.CheckWasCached);
        Assert.False(other.CheckWasCached);
        Assert.False(off.CheckWasCached);
        Assert.True(OnnxModel.Load(path, cacheDirectory: Cache).CheckWasCached);
        Assert.Equal(["x", "n"], damaged.Inputs.Select(i => i.Name));
    }

    [Fact]
    public void RememberedHashes_PastTheLimit_TheOlderHalfIsDropped_AndTheNewestKept()
    {
        // A thousand entries for model paths that are long gone (temporary folders), the oldest first; loading one more
        // model remembers its hash and trims the folder to the newest half.
        var files = Directory.CreateDirectory(Path.Combine(Cache, "files"));
        var start = new DateTime(2020, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        for (var i = 0; i < ModelCheckCache.RememberedFilesKept; i++)
        {
            var entry = Path.Combine(files.FullName, $"old-{i:D4}.json");
            File.WriteAllText(entry, "{}");
            File.SetLastWriteTimeUtc(entry, start.AddMinutes(i));
        }

        var path = TinyModels.Affine(_dir, symbolicBatch: false);
        var model = OnnxModel.Load(path, cacheDirectory: Cache);

        var left = files.GetFiles("*.json").Select(f => f.Name).ToHashSet();
        Assert.Equal(ModelCheckCache.RememberedFilesKept / 2, left.Count);
        Assert.DoesNotContain("old-0000.json", left);
        Assert.Contains($"old-{ModelCheckCache.RememberedFilesKept - 1:D4}.json", left);
        Assert.Equal(model.Sha256, ModelCheckCache.RememberedSha256(Cache, new FileInfo(path)));
    }
}
