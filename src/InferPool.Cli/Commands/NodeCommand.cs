using System.ComponentModel;
using System.Net;
using System.Net.Sockets;
using InferPool.Cluster;
using InferPool.Jobs;
using InferPool.Devices;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>The arguments of <c>inferpool node</c>.</summary>
internal sealed class NodeSettings : CommandSettings
{
    [CommandOption("--cluster <CONNECTION>")]
    [Description("PostgreSQL connection string shared by the cluster, e.g. \"Host=db;Username=inferpool;Database=inferpool\" (the password from PGPASSWORD or ~/.pgpass, not the command line).")]
    public string Cluster { get; init; } = "";

    [CommandOption("--devices <DEVICES>")]
    [Description("This node's devices: auto, cpu, cuda:0,1, cuda:0=2,cpu.")]
    [DefaultValue("auto")]
    public string Devices { get; init; } = "auto";

    [CommandOption("--threads <N>")]
    [Description("ONNX Runtime intra-op threads per CPU replica. Default: cores / CPU replicas")]
    public int? Threads { get; init; }

    [CommandOption("--name <NAME>")]
    [Description("This node's name in the cluster (unique). Default: host name and silo port")]
    public string? Name { get; init; }

    [CommandOption("--advertise <ADDRESS>")]
    [Description("The address other nodes reach this one at. Default: this host's first IPv4 address")]
    public string? Advertise { get; init; }

    [CommandOption("--silo-port <PORT>")]
    [DefaultValue(11111)]
    public int SiloPort { get; init; } = 11111;

    [CommandOption("--gateway-port <PORT>")]
    [DefaultValue(30000)]
    public int GatewayPort { get; init; } = 30000;

    [CommandOption("--drain-timeout <SECONDS>")]
    [Description("On Ctrl+C or SIGTERM, how long the shard in progress may take to finish and be committed before it is handed back.")]
    [DefaultValue(JobDefaults.DrainTimeoutSeconds)]
    public double DrainTimeoutSeconds { get; init; } = JobDefaults.DrainTimeoutSeconds;

    [CommandOption("--allow-worker <PATTERN>")]
    [Description("A worker command this node may run: a glob (* and ?) over the whole command line, e.g. \"python3 /opt/models/*.py\". Repeatable. Without it the node runs ONNX models only and refuses worker jobs.")]
    public string[] AllowWorker { get; init; } = [];

    [CommandOption("--fast-failure-detection")]
    [Description("Declare a silent node dead within seconds instead of Orleans' default (for tests and small local clusters).")]
    public bool FastFailureDetection { get; init; }

    public override ValidationResult Validate()
    {
        if (string.IsNullOrWhiteSpace(Cluster))
        {
            return ValidationResult.Error("--cluster is required: the PostgreSQL connection string the nodes share.");
        }

        if (Advertise is not null && !IPAddress.TryParse(Advertise, out _))
        {
            return ValidationResult.Error($"--advertise '{Advertise}' is not an IP address.");
        }

        return DevicesOption.Validate(Devices);
    }
}

/// <summary>
/// <c>inferpool node</c>: joins the cluster (an Orleans silo clustered through PostgreSQL) and works on every
/// running job's shards with this machine's devices until stopped (Ctrl+C or SIGTERM).
/// </summary>
internal sealed class NodeCommand(IAnsiConsole console, ErrorOutput errors, Interrupts interrupts) : AsyncCommand<NodeSettings>
{
    public override async Task<int> ExecuteAsync(CommandContext context, NodeSettings settings, CancellationToken cancellationToken)
    {
        // The host drains the shard in progress on the first signal; past the drain time (and Orleans' own leave),
        // stop at once.
        interrupts.DrainWithin(TimeSpan.FromSeconds(settings.DrainTimeoutSeconds + 15));
        var inventory = NvmlDeviceInventory.Discover();
        var plan = DevicesOption.Plan(inventory, settings.Devices, threads: settings.Threads);
        var name = settings.Name ?? $"{Dns.GetHostName()}-{settings.SiloPort}";
        var advertise = settings.Advertise is { } a ? IPAddress.Parse(a) : HostAddress();
        var node = new InferPool.Cluster.NodeSettings(settings.Cluster, name, advertise, settings.SiloPort, settings.GatewayPort, settings.FastFailureDetection);
        try
        {
            await NodeHost.PrepareDatabaseAsync(settings.Cluster, cancellationToken).ConfigureAwait(false);
            using var logs = new ConsoleLoggerProvider(errors.Writer, LogLevel.Information);
            using var host = NodeHost.Build(node, new ClusterNodeOptions(name, plan, settings.Threads, TimeSpan.FromSeconds(1)) { DrainTimeout = TimeSpan.FromSeconds(settings.DrainTimeoutSeconds), AllowedWorkers = settings.AllowWorker }, logs);
            console.WriteLine($"Node {name} joining cluster '{NodeHost.ClusterId}' at {advertise}:{settings.SiloPort} (gateway {settings.GatewayPort}) with {plan}.");
            await host.RunAsync(cancellationToken).ConfigureAwait(false);
            return interrupts.Signal is null ? ExitCodes.Ok : interrupts.ExitCode;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return interrupts.ExitCode;
        }
        catch (Exception ex) when (ex is Npgsql.NpgsqlException or ArgumentException or InvalidOperationException or SocketException)
        {
            return errors.Fail($"node {name} could not join the cluster: {ex.Message}");
        }
    }

    private static IPAddress HostAddress() =>
        Dns.GetHostAddresses(Dns.GetHostName()).FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a))
        ?? IPAddress.Loopback;
}
