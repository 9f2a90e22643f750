using System.Collections.Concurrent;
using InferPool.Replicas;
using static InferPool.Tests.PoolTestKit;
using static InferPool.Tests.Scheduling.FailureTests;

namespace InferPool.Tests.Scheduling;

public class CancellationTests
{
    private readonly ConcurrentBag<RecordingModel> _created = [];

    public enum Stage
    {
        WaitingForInput,
        Preparing,
        Inferring,
        InferringUncooperatively,
        ConsumerSlow,
    }

    [Theory]
    [InlineData(Stage.WaitingForInput)]
    [InlineData(Stage.Preparing)]
    [InlineData(Stage.Inferring)]
    [InlineData(Stage.InferringUncooperatively)]
    [InlineData(Stage.ConsumerSlow)]
    public async Task Cancel_DuringStage_StopsAndDisposesEveryReplica(Stage stage)
    {
        using var cts = new CancellationTokenSource();
        using var stuck = new ManualResetEventSlim();
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var options = new InferencePoolOptions
        {
            Replicas = Plan(("cpu", 2)),
            MaxBatchSize = 2,
            // A stuck native call can only be abandoned, after the drain timeout; everything else must finish
            // well within it, however busy the machine is.
            DrainTimeout = stage == Stage.InferringUncooperatively ? TimeSpan.FromMilliseconds(200) : Bound,
        };

        async IAsyncEnumerable<int> Source([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
        {
            for (var i = 0; i < 1000; i++)
            {
                if (stage == Stage.WaitingForInput && i == 10)
                {
                    reached.TrySetResult();
                    await Task.Delay(Timeout.Infinite, ct);
                }

                yield return i;
            }
        }

        var factory = ReplicaFactory.FromBlocking<int, RecordingModel, int>(
            slot => RecordingModel.Create(slot, _created),
            (model, batch, ct) =>
            {
                if (batch.Contains(20))
                {
                    if (stage == Stage.Inferring)
                    {
                        reached.TrySetResult();
                        ct.WaitHandle.WaitOne();
                        ct.ThrowIfCancellationRequested();
                    }
                    else if (stage == Stage.InferringUncooperatively)
                    {
                        reached.TrySetResult();
                        stuck.Wait(CancellationToken.None); // a native call that never looks at the token
                    }
                }

                return model.Square(batch);
            });

        var run = InferencePool.RunAsync(
            Source(),
            async (item, ct) =>
            {
                if (stage == Stage.Preparing && item == 15)
                {
                    reached.TrySetResult();
                    await Task.Delay(Timeout.Infinite, ct);
                }

                return item;
            },
            factory,
            options,
            cts.Token);

        var consumed = 0;
        var consume = Task.Run(async () =>
        {
            await foreach (var _ in run)
            {
                if (++consumed == 5 && stage == Stage.ConsumerSlow)
                {
                    reached.TrySetResult();
                    await Task.Delay(Timeout.Infinite, cts.Token);
                }
            }
        });

        try
        {
            await reached.Task.WaitAsync(Bound);
            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => consume.WaitAsync(Bound));
        }
        finally
        {
            stuck.Set();
        }

        Assert.NotEmpty(_created);
        if (stage != Stage.InferringUncooperatively)
        {
            // The stuck replica's disposal is abandoned after the drain timeout, by design.
            Assert.All(_created, m => Assert.True(m.Disposed, $"{m.Slot} was not disposed"));
        }
    }

    [Fact]
    public async Task BreakOutOfLoop_StopsTheJobAndDisposesReplicas()
    {
        var taken = 0;
        await foreach (var _ in InferencePool.RunAsync(AsyncRange(100_000), ReplicaFactory.FromBlocking<int, RecordingModel, int>(slot => RecordingModel.Create(slot, _created), (m, b, _) => m.Square(b))).WithCancellation(CancellationToken.None))
        {
            if (++taken == 10)
            {
                break;
            }
        }

        Assert.Equal(10, taken);
        Assert.All(_created, m => Assert.True(m.Disposed));
    }
}
