using InferPool.Cli;
using InferPool.Cli.Commands;
using Microsoft.Extensions.DependencyInjection;
using Spectre.Console;
using Spectre.Console.Cli;

// NVML numbers GPUs in PCI bus order and CUDA, by default, fastest first: make cuda:N the same card to both, for
// ONNX Runtime in this process (which reads the variable with getenv: .NET's own copy of the environment does not
// reach it) and for worker processes, which inherit it.
NativeEnvironment.SetDefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID");

// Loading ONNX Runtime and creating its environment takes ~60 ms: commands that run models start it while the command
// line is parsed (about 200 ms here) instead of after. A failure to load shows where the model is loaded, with its message.
if (args is ["run" or "tune" or "bench" or "node", ..])
{
    _ = Task.Run(static () => Microsoft.ML.OnnxRuntime.OrtEnv.Instance());
}

using var interrupts = Interrupts.ForConsole();
if (Console.IsOutputRedirected)
{
    // Logs and pipes: one line per message, not wrapped at 80 columns.
    AnsiConsole.Console.Profile.Width = 400;
}

// The commands' services: the console, standard error, the clock and Ctrl+C, injected so commands are testable.
var services = new ServiceCollection()
    .AddSingleton(AnsiConsole.Console)
    .AddSingleton(new ErrorOutput(Console.Error))
    .AddSingleton(TimeProvider.System)
    .AddSingleton(interrupts);
var app = new CommandApp(new TypeRegistrar(services));
app.Configure(config =>
{
    config.SetApplicationName("inferpool");
    config.UseStrictParsing();
    config.AddCommand<RunCommand>("run")
        .WithDescription("Run a model over every input on every device; with no arguments, embed the sample images with the built-in ResNet-18.")
        .WithExample("run")
        .WithExample("run", "photos/", "-o", "embeddings", "--devices", "auto")
        .WithExample("run", "inputs.jsonl", "--model", "model.onnx", "--format", "jsonl");
    config.AddCommand<TuneCommand>("tune")
        .WithDescription("Measure replicas, threads and batch size on your inputs within a time budget; save the fastest for run.")
        .WithExample("tune", "photos/", "--budget", "60s");
    config.AddCommand<BenchCommand>("bench")
        .WithDescription("Time the same job three ways in one process: the plain loop, Parallel.ForEachAsync over one session, and InferPool.")
        .WithExample("bench", "--items", "200", "--chart", "bench.png");
    config.AddCommand<NodeCommand>("node")
        .WithDescription("Join a cluster (Orleans, clustered through PostgreSQL) and work on its jobs with this machine's devices.")
        .WithExample("node", "--cluster", "Host=db;Username=inferpool;Database=inferpool", "--devices", "auto");
    config.AddCommand<StatusCommand>("status").WithDescription("Show a cluster job's progress, or the latest jobs.");
    config.AddCommand<CancelCommand>("cancel").WithDescription("Stop handing out a cluster job's shards.");
    config.AddCommand<ExportCommand>("export")
        .WithDescription("Write a finished cluster job's results to a folder of parts, as a local run writes them (resumable).")
        .WithExample("export", "job-20261130-1200-ab12", "--cluster", "Host=db;Username=inferpool;Database=inferpool", "-o", "results");
    config.AddCommand<DevicesCommand>("devices").WithDescription("List the CPU cores and GPUs this machine offers.");
    config.SetExceptionHandler((ex, _) =>
    {
        Console.Error.WriteLine($"inferpool: {ex.Message}");
        return ExitCodes.JobFailed;
    });
});
return await app.RunAsync(args, interrupts.StopNow).ConfigureAwait(false);
