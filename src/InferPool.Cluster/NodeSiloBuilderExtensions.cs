using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace InferPool.Cluster;

/// <summary>Makes a silo in a program's own Orleans host an InferPool node.</summary>
public static class NodeSiloBuilderExtensions
{
    /// <summary>
    /// What makes a silo an InferPool node, whatever its clustering: the job store on PostgreSQL and its signals (an idle node wakes when a job is submitted), the node's options,
    /// and its work loop (a hosted service that leases shards, runs them on this machine's devices and commits them).
    /// Apply the schema first with <see cref="NodeHost.PrepareDatabaseAsync"/>.
    /// </summary>
    /// <param name="silo">The silo.</param>
    /// <param name="connectionString">The PostgreSQL connection string the nodes share.</param>
    /// <param name="node">What the node runs with.</param>
    /// <returns>The silo, for chaining.</returns>
    public static ISiloBuilder AddInferPoolNode(this ISiloBuilder silo, string connectionString, ClusterNodeOptions node)
    {
        ArgumentNullException.ThrowIfNull(silo);
        ArgumentException.ThrowIfNullOrEmpty(connectionString);
        ArgumentNullException.ThrowIfNull(node);
        var resolved = ClusterConnection.Resolve(connectionString);
        silo.Services.AddSingleton(_ => NpgsqlDataSource.Create(resolved));
        silo.Services.AddSingleton(sp => new ClusterStore(sp.GetRequiredService<NpgsqlDataSource>()));
        silo.Services.AddSingleton(sp => ClusterSignals.ForWork(sp.GetRequiredService<NpgsqlDataSource>(), sp.GetService<ILoggerFactory>()?.CreateLogger<ClusterSignals>()));
        silo.Services.AddSingleton(node);
        silo.Services.AddHostedService<ClusterNode>();
        // The host waits for the shard in progress to drain (and Orleans to leave the cluster) when it stops.
        silo.Services.Configure<HostOptions>(o =>
        {
            var needed = node.DrainTimeout + TimeSpan.FromSeconds(15);
            o.ShutdownTimeout = o.ShutdownTimeout > needed ? o.ShutdownTimeout : needed;
        });
        return silo;
    }
}
