using Microsoft.Extensions.Options;
using Orleans.Configuration;

namespace InferPool.Cluster;

/// <summary>The coordinator of one job (keyed by job id): grants and renews shard leases. One activation per job in the cluster.</summary>
public interface IJobCoordinatorGrain : IGrainWithStringKey
{
    /// <summary>The next free shard for <paramref name="node"/>, with a new epoch; null when none is free.</summary>
    /// <param name="node">The node's name.</param>
    /// <param name="silo">The node's silo incarnation (address:port:generation), which tells a restarted node from its dead predecessor of the same name.</param>
    /// <param name="ahead">Taken while the node still runs another shard: granted only while more shards wait than there are active nodes.</param>
    Task<ShardLease?> AcquireAsync(string node, string? silo, bool ahead = false);

    /// <summary>Extends <paramref name="lease"/>; false when the shard has been granted to someone else or is done.</summary>
    Task<bool> RenewAsync(ShardLease lease, string node);

    /// <summary>The job's progress, or null for an unknown job.</summary>
    Task<JobProgress?> ProgressAsync();
}

/// <summary>
/// Grants leases for one job. Its state is the shards table in PostgreSQL, so an activation lost with its silo
/// comes back elsewhere with nothing lost; it keeps no state of its own and does no long work in a call.
/// </summary>
internal sealed class JobCoordinatorGrain(ClusterStore store, IOptions<ClusterOptions> cluster) : Grain, IJobCoordinatorGrain
{
    public Task<ShardLease?> AcquireAsync(string node, string? silo, bool ahead = false) =>
        store.AcquireAsync(this.GetPrimaryKeyString(), node, cluster.Value.ClusterId, CancellationToken.None, silo, ahead);

    public Task<bool> RenewAsync(ShardLease lease, string node)
    {
        ArgumentNullException.ThrowIfNull(lease);
        return store.RenewAsync(lease, node, CancellationToken.None);
    }

    public Task<JobProgress?> ProgressAsync() => store.ProgressAsync(this.GetPrimaryKeyString(), CancellationToken.None);
}
