using Npgsql;

namespace InferPool.Cluster;

/// <summary>
/// The cluster's connection string, with the password kept out of it (and so out of command lines, where <c>ps</c>
/// shows them): besides PostgreSQL's own <c>PGPASSWORD</c> and <c>~/.pgpass</c>, which Npgsql reads by itself, a
/// <c>PasswordEnv=NAME</c> entry names an environment variable that holds the password.
/// </summary>
public static class ClusterConnection
{
    private const string PasswordEnv = "PasswordEnv";

    /// <summary>The connection string Npgsql takes: a <c>PasswordEnv=NAME</c> entry replaced by the password in that variable.</summary>
    /// <param name="connectionString">The cluster's connection string, with or without a <c>PasswordEnv</c> entry.</param>
    /// <exception cref="ArgumentException">The variable it names is not set.</exception>
    public static string Resolve(string connectionString)
    {
        ArgumentNullException.ThrowIfNull(connectionString);
        string? variable = null;
        var kept = new List<string>();
        foreach (var part in connectionString.Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            var equals = part.IndexOf('=', StringComparison.Ordinal);
            if (equals > 0 && part[..equals].Trim().Equals(PasswordEnv, StringComparison.OrdinalIgnoreCase))
            {
                variable = part[(equals + 1)..].Trim();
                continue;
            }

            kept.Add(part);
        }

        if (variable is null)
        {
            return connectionString;
        }

        var password = Environment.GetEnvironmentVariable(variable);
        if (string.IsNullOrEmpty(password))
        {
            throw new ArgumentException($"The connection string takes its password from the environment variable {variable} (PasswordEnv), which is not set.", nameof(connectionString));
        }

        return new NpgsqlConnectionStringBuilder(string.Join(';', kept)) { Password = password }.ConnectionString;
    }
}
