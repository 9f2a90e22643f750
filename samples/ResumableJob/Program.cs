using InferPool.Jobs;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;

// What `inferpool run photos -o embeddings` does, as a program: every image of a folder embedded by the built-in
// ResNet-18 on every core and GPU, into Parquet parts. Stop it (Ctrl+C finishes what is in flight) or kill it, run
// it again, and it resumes: every image ends up in the output exactly once.
using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true; // the first Ctrl+C stops taking input; the items in flight finish and are committed
    stop.Cancel();
};

var job = new InferenceJob(new JobOptions
{
    Input = InputSource.Open(args.ElementAtOrDefault(0) ?? "photos"),
    Engine = OnnxEngine.Load("resnet18"),
    OutputDirectory = args.ElementAtOrDefault(1) ?? "embeddings",
    RowsPerPart = 100, // commit every 100 images: a crash loses at most that much work
});
var summary = await job.RunAsync(stopIntake: stop.Token, cancellationToken: CancellationToken.None);

Console.WriteLine($"{summary.Items} embedded, {summary.Skipped} already done, {summary.Failed} failed, in {summary.Elapsed.TotalSeconds:F1} s.");
return summary.FailedInJob > 0 ? 1 : 0;
