using System.Diagnostics;
using System.Threading.Tasks.Dataflow;
using BenchmarkDotNet.Attributes;
using InferPool.Devices;
using InferPool.Results;

namespace InferPool.Benchmarks;

/// <summary>
/// The pool against the usual fixes, same parallelism (one worker per core), same work per item.
/// Trivial items measure per-item overhead; ~50 µs CPU-bound items measure how much of the machine the
/// pool leaves to the model. Results per item (OperationsPerInvoke), allocations included.
/// </summary>
[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 2, iterationCount: 5)]
public class PoolOverheadBenchmarks
{
    private static readonly int Workers = Environment.ProcessorCount;
    private static readonly long FiftyMicroseconds = Stopwatch.Frequency / 20_000;

    private int[] _items = [];

    /// <summary>Work per item: none, or about 50 µs of CPU.</summary>
    [Params("trivial", "50us")]
    public string Work { get; set; } = "trivial";

    private int Count => Work == "trivial" ? 1_000_000 : 40_000;

    [GlobalSetup]
    public void Setup() => _items = [.. Enumerable.Range(0, Count)];

    [Benchmark(Baseline = true, OperationsPerInvoke = 1)]
    public async Task<long> ParallelForEachAsync()
    {
        var results = new int[_items.Length];
        var work = Work;
        await Parallel.ForEachAsync(
            Enumerable.Range(0, _items.Length),
            new ParallelOptions { MaxDegreeOfParallelism = Workers },
            (i, _) =>
            {
                results[i] = Compute(_items[i], work);
                return ValueTask.CompletedTask;
            });
        return results.Length;
    }

    [Benchmark]
    public async Task<long> DataflowTransformBlock()
    {
        var work = Work;
        var block = new TransformBlock<int, int>(x => Compute(x, work), new ExecutionDataflowBlockOptions
        {
            MaxDegreeOfParallelism = Workers,
            BoundedCapacity = 4096,
            EnsureOrdered = true,
        });
        long sum = 0;
        var consume = Task.Run(async () =>
        {
            while (await block.OutputAvailableAsync().ConfigureAwait(false))
            {
                while (block.TryReceive(out var v))
                {
                    sum += v;
                }
            }
        });
        foreach (var item in _items)
        {
            await block.SendAsync(item).ConfigureAwait(false);
        }

        block.Complete();
        await consume.ConfigureAwait(false);
        return sum;
    }

    [Benchmark]
    public Task<long> InferPoolBatch64() => RunPool(64);

    [Benchmark]
    public Task<long> InferPoolBatch1() => RunPool(1);

    private async Task<long> RunPool(int batch)
    {
        var work = Work;
        var options = new InferencePoolOptions
        {
            Replicas = ReplicaPlan.Cpu(Workers),
            MaxBatchSize = batch,
            Order = ResultOrder.Input,
        };
        long sum = 0;
        await foreach (var r in InferencePool.RunAsync(
            _items,
            _ => work,
            (w, items, _) =>
            {
                var outputs = new int[items.Count];
                for (var i = 0; i < outputs.Length; i++)
                {
                    outputs[i] = Compute(items[i], w);
                }

                return outputs;
            },
            options).ConfigureAwait(false))
        {
            sum += r.Value;
        }

        return sum;
    }

    private static int Compute(int x, string work)
    {
        if (work == "trivial")
        {
            return x + 1;
        }

        var end = Stopwatch.GetTimestamp() + FiftyMicroseconds;
        var acc = x;
        while (Stopwatch.GetTimestamp() < end)
        {
            acc = (acc * 31) + 7;
        }

        return acc;
    }
}
