using System.Collections.Concurrent;
using System.Text.Json;
using InferPool.Devices;
using InferPool.Results;

namespace InferPool.Processes.Tests;

public sealed class WorkerReplicaTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(2);
    private static readonly string Worker = $"python3 {Path.Combine(AppContext.BaseDirectory, "workers", "test_worker.py")}";

    [Fact]
    public async Task Run_TwoWorkers_ResultsInOrderAndEachPinnedToItsDevice()
    {
        var plan = ReplicaPlan.Create(new DeviceAllocation(Device.Cuda(1), 1), new DeviceAllocation(Device.Cpu, 1));
        var results = await RunAsync(Enumerable.Range(0, 40).Select(i => (object)i), plan, batch: 4);

        Assert.Equal(Enumerable.Range(0, 40).Select(i => (long)i), results.Select(r => r.Index));
        Assert.All(results, r =>
        {
            Assert.True(r.IsSuccess, r.Error?.ToString());
            Assert.Equal(r.Item.Input.GetInt32() * 2, r.Value.GetProperty("double").GetInt32());
            Assert.Equal(r.Replica!.Name, r.Value.GetProperty("replica").GetString());
            Assert.Equal(r.Device.ToString(), r.Value.GetProperty("device").GetString());
            Assert.Equal(r.Device!.Value.IsGpu ? "1" : "", r.Value.GetProperty("cuda_visible").GetString());
        });
    }

    [Fact]
    public async Task Create_EachSlot_StartsItsOwnProcessPinnedToItsDevice()
    {
        var plan = ReplicaPlan.Create(new DeviceAllocation(Device.Cuda(1), 1), new DeviceAllocation(Device.Cpu, 1));
        var factory = new WorkerReplicaFactory(new WorkerOptions { Command = Worker });
        var seen = new List<JsonElement>();
        foreach (var slot in plan.Slots)
        {
            var replica = await factory.CreateAsync(slot).AsTask().WaitAsync(Bound);
            await using (replica)
            {
                var outcome = Assert.Single(await replica.InferAsync([new WorkerInput("k", JsonSerializer.SerializeToElement(21))]));
                Assert.True(outcome.IsSuccess, outcome.Error?.ToString());
                seen.Add(outcome.Value);
            }
        }

        Assert.Equal(["cuda:1", "cpu"], seen.Select(v => v.GetProperty("device").GetString()));
        Assert.Equal(["1", ""], seen.Select(v => v.GetProperty("cuda_visible").GetString()));
        Assert.Equal(["cuda:1#0", "cpu#0"], seen.Select(v => v.GetProperty("replica").GetString()));
        Assert.All(seen, v => Assert.Equal(42, v.GetProperty("double").GetInt32()));
        Assert.NotEqual(seen[0].GetProperty("pid").GetInt32(), seen[1].GetProperty("pid").GetInt32());
    }

    [Fact]
    public async Task Run_Preforked_ThreeReplicasShareOneLoadEachServedByAForkOfTheLoader()
    {
        var results = await RunAsync(Enumerable.Range(0, 60).Select(i => (object)i), ReplicaPlan.Cpu(3), batch: 2, prefork: true);

        Assert.All(results, r => Assert.True(r.IsSuccess, r.Error?.ToString()));
        var loaders = results.Select(r => r.Value.GetProperty("loaded_by").GetInt32()).Distinct().ToList();
        var loader = Assert.Single(loaders); // one load() for the three replicas
        var servers = results.GroupBy(r => r.Value.GetProperty("pid").GetInt32()).ToList();
        Assert.DoesNotContain(servers, s => s.Key == loader);
        Assert.All(servers, s =>
        {
            // Each serving process is one replica's, with that replica's own environment (set after the fork).
            var replica = Assert.Single(s.Select(r => r.Replica!.Name).Distinct());
            Assert.All(s, r => Assert.Equal(replica, r.Value.GetProperty("replica").GetString()));
        });
        Assert.Equal(servers.Count, servers.Select(s => s.First().Replica!.Name).Distinct().Count());
    }

    [Fact]
    public async Task Create_PreforkWithAGpuSlot_TheGpuReplicaLoadsItsOwnModelTheCpuReplicasShareOne()
    {
        var plan = ReplicaPlan.Create(new DeviceAllocation(Device.Cuda(1), 1), new DeviceAllocation(Device.Cpu, 2));
        var factory = new WorkerReplicaFactory(new WorkerOptions { Command = Worker, Prefork = true, ShutdownTimeout = TimeSpan.FromSeconds(2) });
        var replicas = new List<Replicas.IReplica<WorkerInput, JsonElement>>();
        var seen = new List<JsonElement>();
        try
        {
            foreach (var slot in plan.Slots)
            {
                replicas.Add(await factory.CreateAsync(slot).AsTask().WaitAsync(Bound));
            }

            foreach (var replica in replicas)
            {
                var outcome = Assert.Single(await replica.InferAsync([new WorkerInput("k", JsonSerializer.SerializeToElement(1))]));
                Assert.True(outcome.IsSuccess, outcome.Error?.ToString());
                seen.Add(outcome.Value);
            }
        }
        finally
        {
            foreach (var replica in replicas)
            {
                await replica.DisposeAsync();
            }
        }

        // CUDA cannot be forked: the GPU replica loaded in its own process; the CPU replicas share one loader.
        Assert.Equal(["cuda:1#0", "cpu#0", "cpu#1"], seen.Select(v => v.GetProperty("replica").GetString()));
        Assert.Equal(seen[0].GetProperty("pid").GetInt32(), seen[0].GetProperty("loaded_by").GetInt32());
        Assert.Equal(seen[1].GetProperty("loaded_by").GetInt32(), seen[2].GetProperty("loaded_by").GetInt32());
        Assert.All(seen.Skip(1), v => Assert.NotEqual(v.GetProperty("pid").GetInt32(), v.GetProperty("loaded_by").GetInt32()));
        Assert.All(factory.Workers, w => Assert.True(w.ResidentBytes > 0, $"{w.Replica}: {w.ResidentBytes}"));
    }

    [Fact]
    public async Task Create_GpuSlotWithAKnownCard_PinsTheWorkerByTheCardsUuid()
    {
        GpuInfo[] gpus = [new(Device.Cuda(0), "A", 1, 1) { Uuid = "GPU-aaaa", NvmlIndex = 2 }, new(Device.Cuda(1), "B", 1, 1) { Uuid = "GPU-bbbb", NvmlIndex = 0 }];
        var factory = new WorkerReplicaFactory(new WorkerOptions { Command = Worker, Gpus = gpus });
        var slot = ReplicaPlan.Create(new DeviceAllocation(Device.Cuda(1), 1)).Slots[0];

        var replica = await factory.CreateAsync(slot).AsTask().WaitAsync(Bound);
        await using (replica)
        {
            var outcome = Assert.Single(await replica.InferAsync([new WorkerInput("k", JsonSerializer.SerializeToElement(1))]));
            Assert.Equal("GPU-bbbb", outcome.Value.GetProperty("cuda_visible").GetString());
        }
    }

    [Fact]
    public async Task Run_NodeWorker_SpeaksTheSameProtocol()
    {
        var options = new InferencePoolOptions { Replicas = ReplicaPlan.Cpu(2), MaxBatchSize = 3 };
        var factory = new WorkerReplicaFactory(new WorkerOptions { Command = $"node {Path.Combine(AppContext.BaseDirectory, "workers", "node_worker.js")}" });
        object[] inputs = [new[] { 1, 2, 3 }, 5, "text", new[] { 0.5, 0.25 }];

        var results = new List<InferenceResult<WorkerInput, JsonElement>>();
        await foreach (var r in InferencePool.RunAsync(Inputs(inputs), factory, options).WithCancellation(CancellationToken.None))
        {
            results.Add(r);
        }

        Assert.Equal(6, results[0].Value.GetProperty("sum").GetInt32());
        Assert.Equal(10, results[1].Value.GetProperty("double").GetInt32());
        Assert.Equal("TypeError", results[2].Error!.Type);
        Assert.Equal("cannot handle input of type string", results[2].Error!.Message);
        Assert.Equal(0.75, results[3].Value.GetProperty("sum").GetDouble());
        Assert.All(results.Where(r => r.IsSuccess), r => Assert.Equal(r.Replica!.Name, r.Value.GetProperty("replica").GetString()));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Run_WorkerReportsAnItemError_OnlyThatItemFails(bool prefork)
    {
        var results = await RunAsync([1, 2, "bad", 4], ReplicaPlan.Cpu(1), batch: 4, prefork: prefork);

        Assert.Equal([true, true, false, true], results.Select(r => r.IsSuccess));
        Assert.Equal("ValueError", results[2].Error!.Type);
        Assert.Equal("bad input", results[2].Error!.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Run_WorkerProcessDies_ItIsRestartedAndOnlyThePoisonItemFails(bool prefork)
    {
        var inputs = new object[] { 1, 2, 3, "crash", 5, 6, 7, 8 };
        var results = await RunAsync(inputs, ReplicaPlan.Cpu(2), batch: 4, maxAttempts: 2, prefork: prefork);

        var poison = Assert.Single(results, r => !r.IsSuccess);
        Assert.Equal(3, poison.Index);
        Assert.Equal(FailureStage.Replica, poison.Error!.Stage);
        Assert.Contains("exit code 3", poison.Error.Message, StringComparison.Ordinal);
        Assert.Equal(2, poison.Attempts);
        Assert.Equal(7, results.Count(r => r.IsSuccess));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Run_WorkerHangs_ItIsKilledAfterTheBatchTimeoutReplacedAndTheJobCompletes(bool prefork)
    {
        // One replica, so the items after the hang show whether its process was replaced. The timeout is wide (an
        // ordinary item takes milliseconds) so that a slow shared machine never times out a healthy call.
        var results = await RunAsync([1, "hang", 3, 4], ReplicaPlan.Cpu(1), batch: 1, maxAttempts: 1, batchTimeout: TimeSpan.FromSeconds(10), prefork: prefork);

        var hung = Assert.Single(results, r => !r.IsSuccess);
        Assert.Equal(1, hung.Index);
        Assert.Equal(nameof(TimeoutException), hung.Error!.Type);
        Assert.Equal(3, results.Count(r => r.IsSuccess));
        var before = results[0].Value.GetProperty("pid").GetInt32();
        var after = results[2].Value.GetProperty("pid").GetInt32();
        Assert.NotEqual(before, after);
        Assert.Equal(after, results[3].Value.GetProperty("pid").GetInt32());

        // The hung process is gone, not left running beside its replacement.
        try
        {
            using var old = System.Diagnostics.Process.GetProcessById(before);
            await old.WaitForExitAsync().WaitAsync(Bound);
        }
        catch (ArgumentException)
        {
            // Already exited and reaped.
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Run_WorkerWritesStrayLinesToStdout_TheyAreLoggedAndEveryItemSucceeds(bool prefork)
    {
        var results = await RunAsync([1, "garbage", 3], ReplicaPlan.Cpu(1), batch: 1, maxAttempts: 1, prefork: prefork);

        Assert.Equal(3, results.Count(r => r.IsSuccess));
    }

    [Fact]
    public async Task Run_WorkerRunsOutOfMemoryOnABatch_ThePoolHalvesItsBatchUntilItFitsAndEveryItemSucceeds()
    {
        // The worker "fits" two items: a batch of 8 is answered with the protocol's out-of-memory error reply.
        var halvings = new ConcurrentQueue<string>();
        var monitor = new Diagnostics.PoolMonitor();
        monitor.ReplicaChanged += (_, e) =>
        {
            if (e.Kind == Diagnostics.ReplicaEventKind.BatchLimitHalved)
            {
                halvings.Enqueue(e.Message);
            }
        };
        var options = new InferencePoolOptions { Replicas = ReplicaPlan.Cpu(1), MaxBatchSize = 8, MaxBatchDelay = TimeSpan.FromSeconds(5), RestartBackoff = TimeSpan.Zero, Monitor = monitor };
        var factory = new WorkerReplicaFactory(new WorkerOptions { Command = Worker, ShutdownTimeout = TimeSpan.FromSeconds(2) });
        var results = new List<InferenceResult<WorkerInput, JsonElement>>();
        await foreach (var r in InferencePool.RunAsync(Inputs(Enumerable.Repeat((object)"fits-two", 8)), factory, options))
        {
            results.Add(r);
        }

        Assert.Equal(8, results.Count(r => r.IsSuccess));
        Assert.Equal(2, halvings.Count); // 8 -> 4 -> 2
        Assert.Contains("OutOfMemoryError: CUDA out of memory (simulated): a batch of 8 does not fit", halvings.First(), StringComparison.Ordinal);
        Assert.All(results, r => Assert.Equal(1, r.Attempts));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Run_WorkerWritesABrokenProtocolMessage_TheReplicaIsReplacedAndTheLineIsShown(bool prefork)
    {
        var results = await RunAsync([1, "broken", 3], ReplicaPlan.Cpu(1), batch: 1, maxAttempts: 1, prefork: prefork);

        var bad = Assert.Single(results, r => !r.IsSuccess);
        Assert.Contains("wrote a protocol message that is not valid JSON: '{\"type\": \"result\", oops'", bad.Error!.Message, StringComparison.Ordinal);
        Assert.Contains("cpu#0", bad.Error.Message, StringComparison.Ordinal);
        Assert.Equal(2, results.Count(r => r.IsSuccess));
    }

    [Fact]
    public async Task Run_WorkerNeverStarts_TheJobFailsWithTheReason()
    {
        var options = new InferencePoolOptions { Replicas = ReplicaPlan.Cpu(1), RestartBackoff = TimeSpan.Zero };
        var factory = new WorkerReplicaFactory(new WorkerOptions { Command = "python3 /nonexistent/worker.py" });

        var ex = await Assert.ThrowsAsync<InferencePoolException>(async () =>
        {
            await foreach (var _ in InferencePool.RunAsync(Inputs([1, 2]), factory, options))
            {
            }
        }).WaitAsync(Bound);

        Assert.Contains("No replica is left", ex.Message, StringComparison.Ordinal);
        Assert.Contains("exited before saying hello (exit code 2)", ex.Message, StringComparison.Ordinal);
        Assert.Contains("can't open file", ex.Message, StringComparison.Ordinal);
    }

    private static async Task<List<InferenceResult<WorkerInput, JsonElement>>> RunAsync(
        IEnumerable<object> inputs, ReplicaPlan plan, int batch, int maxAttempts = 3, TimeSpan? batchTimeout = null, bool prefork = false)
    {
        var options = new InferencePoolOptions
        {
            Replicas = plan,
            MaxBatchSize = batch,
            MaxAttempts = maxAttempts,
            BatchTimeout = batchTimeout,
            RestartBackoff = TimeSpan.Zero,
            DrainTimeout = TimeSpan.FromSeconds(10),
        };
        var factory = new WorkerReplicaFactory(new WorkerOptions { Command = Worker, ShutdownTimeout = TimeSpan.FromSeconds(2), Prefork = prefork });
        var results = new List<InferenceResult<WorkerInput, JsonElement>>();
        await foreach (var r in InferencePool.RunAsync(Inputs(inputs), factory, options).WithCancellation(CancellationToken.None))
        {
            results.Add(r);
        }

        return results;
    }

    private static IAsyncEnumerable<WorkerInput> Inputs(IEnumerable<object> values) =>
        values.Select((v, i) => new WorkerInput(i.ToString(System.Globalization.CultureInfo.InvariantCulture), JsonSerializer.SerializeToElement(v))).ToAsyncEnumerable();
}
