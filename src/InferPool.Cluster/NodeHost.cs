using System.Net;
using InferPool.Devices;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using Orleans.Configuration;

namespace InferPool.Cluster;

/// <summary>How a node joins the cluster.</summary>
/// <param name="ConnectionString">The PostgreSQL connection string (Npgsql form: <c>Host=…;Port=…;Username=…;Database=…</c>).</param>
/// <param name="Name">The node's (silo's) name, unique in the cluster.</param>
/// <param name="Advertise">The address other nodes reach this one at.</param>
/// <param name="SiloPort">Silo-to-silo port.</param>
/// <param name="GatewayPort">Client gateway port.</param>
/// <param name="FastFailureDetection">Declare a silent node dead in seconds rather than the default minute or so (tests, small clusters).</param>
public sealed record NodeSettings(string ConnectionString, string Name, IPAddress Advertise, int SiloPort, int GatewayPort, bool FastFailureDetection);

/// <summary>Builds the process a node runs: an Orleans silo clustered through PostgreSQL, plus the node's work loop.</summary>
public static class NodeHost
{
    /// <summary>The cluster and service id every InferPool node uses.</summary>
    public const string ClusterId = "inferpool";

    /// <summary>A host that runs one node: its silo joins the cluster and its work loop takes shards until the host stops.</summary>
    /// <param name="settings">How the node joins the cluster.</param>
    /// <param name="node">What it runs with.</param>
    /// <param name="logs">Where its log lines go.</param>
    public static IHost Build(NodeSettings settings, ClusterNodeOptions node, ILoggerProvider logs)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(logs);
        // The node's own lines at Information; Orleans, Polly and the host only when something is wrong. Orleans'
        // start-up notes about server GC and its watchdog are not the user's concern.
        builder.Logging.AddFilter((category, level) =>
            category?.StartsWith("InferPool", StringComparison.Ordinal) == true ? level >= LogLevel.Information
            : category is "Orleans.Runtime.Silo" or "Orleans.Runtime.Watchdog" ? level >= LogLevel.Error
            : level >= LogLevel.Warning);
        builder.UseOrleans(silo =>
        {
            silo.AddInferPoolNode(settings.ConnectionString, node);
            silo.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = ClusterId;
                o.ServiceId = ClusterId;
            });
            silo.Configure<SiloOptions>(o => o.SiloName = settings.Name);
            silo.ConfigureEndpoints(settings.Advertise, settings.SiloPort, settings.GatewayPort, listenOnAnyHostAddress: true);
            silo.UseAdoNetClustering(o =>
            {
                o.Invariant = "Npgsql";
                o.ConnectionString = ClusterConnection.Resolve(settings.ConnectionString);
            });
            if (settings.FastFailureDetection)
            {
                silo.Configure<ClusterMembershipOptions>(o =>
                {
                    o.ProbeTimeout = TimeSpan.FromSeconds(1);
                    o.NumMissedProbesLimit = 2;
                    o.TableRefreshTimeout = TimeSpan.FromSeconds(2);
                    o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(5);
                    o.DeathVoteExpirationTimeout = TimeSpan.FromSeconds(10);
                    o.NumVotesForDeathDeclaration = 1; // two-node clusters can declare the other one dead
                });
            }
        });
        return builder.Build();
    }

    /// <summary>Applies the schema (idempotent) before the silo reads Orleans' queries from it.</summary>
    /// <param name="connectionString">The PostgreSQL connection string.</param>
    /// <param name="cancellationToken">Stops the migration (it runs in one transaction).</param>
    public static async Task PrepareDatabaseAsync(string connectionString, CancellationToken cancellationToken = default)
    {
        var database = NpgsqlDataSource.Create(ClusterConnection.Resolve(connectionString));
        await using var _ = database.ConfigureAwait(false);
        await ClusterSchema.EnsureAsync(database, cancellationToken).ConfigureAwait(false);
    }
}
