using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace InferPool.TestKit;

/// <summary>
/// A throwaway PostgreSQL server for the cluster tests: initdb into a temporary folder, started on a free loopback
/// port, stopped and deleted at the end. Runs as the postgres user when the tests run as root (initdb refuses
/// root). Where no PostgreSQL is installed, <see cref="Unavailable"/> says so and the tests skip with that reason.
/// </summary>
public sealed class PostgresServer : IDisposable
{
    private readonly string? _bin;
    private readonly string _dir = Directory.CreateTempSubdirectory("inferpool-pg-").FullName;
    private int _databases;

    public PostgresServer()
    {
        _bin = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(b => File.Exists(Path.Combine(b, "initdb"))).OrderDescending(StringComparer.Ordinal).FirstOrDefault()
            : null;
        if (_bin is null)
        {
            Unavailable = "PostgreSQL is not installed (apt-get install postgresql); the cluster tests were not run.";
            return;
        }

        Port = FreePort();
        var asRoot = Environment.UserName == "root";
        if (asRoot)
        {
            Run("chown", "postgres", _dir);
        }

        var data = Path.Combine(_dir, "data");
        RunPg(asRoot, "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8");
        RunPg(asRoot, "pg_ctl", "-D", data, "-l", Path.Combine(_dir, "log"), "-w", "start", "-o",
            $"-p {Port} -k {_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200");
        AsRoot = asRoot;
    }

    /// <summary>Why there is no server, or null.</summary>
    public string? Unavailable { get; }

    public int Port { get; }

    private bool AsRoot { get; }

    /// <summary>A new empty database on the server, as a connection string.</summary>
    public string NewDatabase()
    {
        var name = $"t{Interlocked.Increment(ref _databases)}_{Environment.ProcessId}";
        using (var admin = new NpgsqlConnection($"Host=127.0.0.1;Port={Port};Username=postgres;Database=postgres"))
        {
            admin.Open();
            using var create = new NpgsqlCommand($"CREATE DATABASE {name}", admin);
            create.ExecuteNonQuery();
        }

        return $"Host=127.0.0.1;Port={Port};Username=postgres;Database={name};Pooling=false";
    }

    public void Dispose()
    {
        if (_bin is not null)
        {
            try
            {
                RunPg(AsRoot, "pg_ctl", "-D", Path.Combine(_dir, "data"), "-m", "immediate", "stop");
            }
            catch (InvalidOperationException)
            {
                // Already stopped.
            }
        }

        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A TCP port nothing listens on right now.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private void RunPg(bool asRoot, string tool, params string[] args)
    {
        var path = Path.Combine(_bin!, tool);
        if (asRoot)
        {
            Run("runuser", ["-u", "postgres", "--", path, .. args]);
        }
        else
        {
            Run(path, args);
        }
    }

    private static void Run(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed ({process.ExitCode}): {stderr} {stdout.Result}");
        }
    }
}

[CollectionDefinition(Name)]
public sealed class PostgresTests : ICollectionFixture<PostgresServer>
{
    public const string Name = "postgres";
}
