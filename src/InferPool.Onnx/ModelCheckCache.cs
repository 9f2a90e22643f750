using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Onnx;

/// <summary>
/// What <see cref="OnnxModel.Load(string, Microsoft.Extensions.Logging.ILogger?, string?)"/> learned about a model file that
/// never changes for it: its inputs and outputs and the batching verdict (after the rewrite's parity check). Kept as one
/// small JSON file per model SHA-256 and ONNX Runtime version, so the second load of a model builds no checking session
/// and runs no parity check. A file that cannot be read or written is ignored: the check is simply done again.
/// </summary>
internal static class ModelCheckCache
{
    private static readonly Lazy<string> OrtVersion = new(() => OrtEnv.Instance().GetVersionString());

    /// <summary>
    /// The folder: <c>INFERPOOL_CACHE_DIR</c> when set, else <c>$XDG_CACHE_HOME/inferpool</c>, else
    /// <c>~/.cache/inferpool</c> (the local application data folder on Windows); <c>models/</c> below it.
    /// </summary>
    public static string DefaultDirectory
    {
        get
        {
            var root = Environment.GetEnvironmentVariable("INFERPOOL_CACHE_DIR") is { Length: > 0 } set
                ? set
                : Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg
                    ? Path.Combine(xdg, "inferpool")
                    : OperatingSystem.IsWindows()
                        ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "inferpool")
                        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "inferpool");
            return Path.Combine(root, "models");
        }
    }

    public static Entry? TryRead(string directory, string sha256) =>
        TryReadJson(FileFor(directory, sha256), CacheJson.Default.Entry) is { Version: Entry.CurrentVersion } entry && entry.Sha256 == sha256 && entry.OnnxRuntime == OrtVersion.Value
            ? entry
            : null;

    /// <summary>Keeps what a load checked; a read-only home or a full disk costs the next run a check, nothing else.</summary>
    public static void TryWrite(string directory, Entry entry) =>
        TryWriteJson(FileFor(directory, entry.Sha256), entry, CacheJson.Default.Entry);

    /// <summary>Creates the cache folder if it is missing; false when it cannot be (a read-only home, say).</summary>
    public static bool EnsureDirectory(string directory)
    {
        try
        {
            Directory.CreateDirectory(directory);
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>A cache file's content, or null when it is missing, unreadable or not what was written.</summary>
    private static T? TryReadJson<T>(string path, JsonTypeInfo<T> type)
        where T : class
    {
        try
        {
            return File.Exists(path) ? JsonSerializer.Deserialize(File.ReadAllBytes(path), type) : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or JsonException)
        {
            return null;
        }
    }

    /// <summary>Writes a cache file whole or not at all (written aside, then renamed into place); failures are ignored.</summary>
    private static void TryWriteJson<T>(string path, T value, JsonTypeInfo<T> type)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var temporary = $"{path}.{Environment.ProcessId}.tmp";
            File.WriteAllBytes(temporary, JsonSerializer.SerializeToUtf8Bytes(value, type));
            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // The next run does the work again.
        }
    }

    /// <summary>
    /// The SHA-256 of <paramref name="file"/>'s bytes as remembered from an earlier run, when the file's full path,
    /// size and last write time (to the tick the file system gives) are still what they were then; else null.
    /// Hashing a 90 MB model costs about 200 ms a run; a file rewritten in place changes its time.
    /// </summary>
    public static string? RememberedSha256(string directory, FileInfo file) =>
        TryReadJson(HashFileFor(directory, file.FullName), CacheJson.Default.FileHash) is { } known
            && known.Path == file.FullName && known.Size == file.Length && known.WriteTimeTicks == file.LastWriteTimeUtc.Ticks
            ? known.Sha256
            : null;

    /// <summary>The most remembered hashes kept; past it the older half is dropped (those files are hashed again if loaded).</summary>
    public const int RememberedFilesKept = 1000;

    /// <summary>
    /// Remembers <paramref name="file"/>'s SHA-256 with its path, size and time (best effort: else the next run hashes it
    /// again). One small file per model path, so past <see cref="RememberedFilesKept"/> of them the older half is
    /// deleted: model files in temporary folders would otherwise pile up for ever.
    /// </summary>
    public static void RememberSha256(string directory, FileInfo file, string sha256)
    {
        TryWriteJson(HashFileFor(directory, file.FullName), new FileHash(file.FullName, file.Length, file.LastWriteTimeUtc.Ticks, sha256), CacheJson.Default.FileHash);
        TrimRememberedFiles(Path.Combine(directory, "files"));
    }

    private static void TrimRememberedFiles(string folder)
    {
        try
        {
            var entries = new DirectoryInfo(folder).GetFiles("*.json");
            if (entries.Length <= RememberedFilesKept)
            {
                return;
            }

            foreach (var old in entries.OrderByDescending(e => e.LastWriteTimeUtc).Skip(RememberedFilesKept / 2))
            {
                old.Delete();
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Another process trimmed first, or the folder is read-only: left for a later run.
        }
    }

    private static string HashFileFor(string directory, string fullPath) =>
        Path.Combine(directory, "files", $"{Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(fullPath)))[..32]}.json");

    /// <summary>
    /// Where a CPU session's optimized graph of the model <paramref name="sha256"/> is kept: per ONNX Runtime version and
    /// per CPU (its model and feature flags), because full optimization picks kernels and layouts for the CPU it runs on.
    /// </summary>
    public static string OptimizedGraphFile(string directory, string sha256) =>
        Path.Combine(directory, $"{sha256}.ort-{OrtVersion.Value}.cpu-{CpuKey.Value}.optimized.onnx");

    private static readonly Lazy<string> CpuKey = new(() =>
    {
        var identity = System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();
        try
        {
            if (File.Exists("/proc/cpuinfo"))
            {
                // The first processor's model name and flags (features) decide which kernels the optimizer picks.
                identity += string.Join("\n", File.ReadLines("/proc/cpuinfo").TakeWhile(l => l.Length > 0).Where(l => l.StartsWith("model name", StringComparison.Ordinal) || l.StartsWith("flags", StringComparison.Ordinal) || l.StartsWith("Features", StringComparison.Ordinal)));
            }
        }
        catch (IOException)
        {
            // Architecture only.
        }

        return Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(identity)))[..12];
    });

    public static Entry Describe(string sha256, IReadOnlyList<TensorSpec> inputs, IReadOnlyList<TensorSpec> outputs, BatchingSupport batching, string report) =>
        new(Entry.CurrentVersion, sha256, OrtVersion.Value, [.. inputs.Select(Spec.Of)], [.. outputs.Select(Spec.Of)], batching, report);

    private static string FileFor(string directory, string sha256) => Path.Combine(directory, $"{sha256}.ort-{OrtVersion.Value}.json");

    /// <summary>One cached check.</summary>
    internal sealed record Entry(int Version, string Sha256, string OnnxRuntime, IReadOnlyList<Spec> Inputs, IReadOnlyList<Spec> Outputs, BatchingSupport Batching, string Report)
    {
        public const int CurrentVersion = 1;
    }

    /// <summary>A model file's hash, with what identifies the file's content without reading it.</summary>
    internal sealed record FileHash(string Path, long Size, long WriteTimeTicks, string Sha256);

    /// <summary>A tensor spec as stored.</summary>
    internal sealed record Spec(string Name, TensorElementType ElementType, IReadOnlyList<long> Shape, IReadOnlyList<string> DimensionNames)
    {
        public static Spec Of(TensorSpec spec) => new(spec.Name, spec.ElementType, spec.Shape, spec.DimensionNames);

        public TensorSpec ToSpec() => new(Name, ElementType, Shape) { DimensionNames = DimensionNames };
    }
}

[JsonSourceGenerationOptions(UseStringEnumConverter = true)]
[JsonSerializable(typeof(ModelCheckCache.Entry))]
[JsonSerializable(typeof(ModelCheckCache.FileHash))]
internal sealed partial class CacheJson : JsonSerializerContext;
