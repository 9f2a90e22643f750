using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace InferPool.Cli.Inputs;

/// <summary>
/// Reads a run's inputs lazily: a folder (recursive, image files, in a stable sorted order), a list file
/// (one path per line), or a JSONL file of records (<c>{"key": …, "path": …}</c> or <c>{"key": …, "input": [floats]}</c>).
/// </summary>
internal sealed class InputSource
{
    /// <summary>File extensions taken from a folder.</summary>
    public static readonly IReadOnlySet<string> ImageExtensions = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
    {
        ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ico", ".wbmp", ".heic", ".heif", ".avif",
    };

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly string _path;
    private readonly Kind _kind;
    private readonly bool _forWorker;

    private InputSource(string path, Kind kind, bool forWorker)
    {
        _path = path;
        _kind = kind;
        _forWorker = forWorker;
    }

    private enum Kind
    {
        Folder,
        List,
        Jsonl,
    }

    /// <summary>What the source is, for summaries: e.g. "folder samples/images".</summary>
    public string Description => $"{_kind switch { Kind.Folder => "folder", Kind.List => "list file", _ => "JSONL file" }} {_path}";

    /// <summary>The full path of the input.</summary>
    public string FullPath => System.IO.Path.GetFullPath(_path);

    /// <summary>The sample images shipped with the tool: the input of every command that is given none.</summary>
    public static string SampleImages => System.IO.Path.Combine(AppContext.BaseDirectory, "samples", "images");

    /// <summary>Opens an input path.</summary>
    /// <param name="path">A folder, a list file, or a .jsonl file.</param>
    /// <param name="forWorker">
    /// For worker processes, which read their inputs themselves: a folder gives every file that is not hidden
    /// (not only images), and JSONL records are read whole (<see cref="InputItem.Record"/>, any fields, a
    /// relative <c>path</c> made absolute) instead of requiring a <c>path</c> or an <c>input</c> tensor.
    /// </param>
    /// <exception cref="FileNotFoundException">Nothing exists at the path.</exception>
    public static InputSource Open(string path, bool forWorker = false)
    {
        if (Directory.Exists(path))
        {
            return new InputSource(path, Kind.Folder, forWorker);
        }

        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The input '{path}' does not exist (expected a folder of images, a list file, or a .jsonl file).", path);
        }

        return new InputSource(path, path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) ? Kind.Jsonl : Kind.List, forWorker);
    }

    /// <summary>The items, read lazily.</summary>
    public IAsyncEnumerable<InputItem> ReadAsync() => (_kind switch
    {
        Kind.Folder => WalkFolder(_path, _forWorker).Select(f => new InputItem(Relative(f), f)),
        Kind.List => ReadList(),
        _ => ReadJsonl(),
    }).ToAsyncEnumerable();

    /// <summary>Counts the items without reading them, for progress and ETA.</summary>
    public long Count() => _kind == Kind.Folder ? WalkFolder(_path, _forWorker).LongCount() : CountRecordLines(_path);

    /// <summary>Lines that hold something (not blank, not a # comment), counted in place without copying any line.</summary>
    private static long CountRecordLines(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var buffer = new byte[1 << 16];
        long count = 0;
        var atLineStart = true;
        var lineHasContent = false;
        int read;
        while ((read = stream.Read(buffer)) > 0)
        {
            foreach (var b in buffer.AsSpan(0, read))
            {
                if (b == '\n')
                {
                    count += lineHasContent ? 1 : 0;
                    atLineStart = true;
                    lineHasContent = false;
                }
                else if (atLineStart && b is (byte)' ' or (byte)'\t' or (byte)'\r')
                {
                    // Leading blanks decide nothing yet.
                }
                else if (atLineStart)
                {
                    atLineStart = false;
                    lineHasContent = b != '#';
                }
            }
        }

        return count + (lineHasContent ? 1 : 0);
    }

    /// <summary>Files under a folder: each directory's files sorted by ordinal name, then its subdirectories, so the order is stable and nothing is held in memory beyond one directory.</summary>
    private static IEnumerable<string> WalkFolder(string root, bool everyFile)
    {
        var pending = new Stack<string>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            var dir = pending.Pop();
            var files = Directory.GetFiles(dir);
            Array.Sort(files, StringComparer.Ordinal);
            foreach (var file in files)
            {
                if (everyFile ? !System.IO.Path.GetFileName(file).StartsWith('.') : ImageExtensions.Contains(System.IO.Path.GetExtension(file)))
                {
                    yield return file;
                }
            }

            var subdirs = Directory.GetDirectories(dir);
            Array.Sort(subdirs, StringComparer.Ordinal);
            for (var i = subdirs.Length - 1; i >= 0; i--)
            {
                pending.Push(subdirs[i]);
            }
        }
    }

    private string Relative(string file) => System.IO.Path.GetRelativePath(_path, file).Replace('\\', '/');

    private IEnumerable<InputItem> ReadList()
    {
        var baseDir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(_path))!;
        foreach (var (number, bytes) in ReadLines(_path))
        {
            if (IsBlankOrComment(bytes))
            {
                continue;
            }

            if (!TryDecode(bytes, out var text))
            {
                yield return new InputItem($"line {number}", Error: $"Line {number} of {_path} is not valid UTF-8.");
                continue;
            }

            var entry = text.Trim();
            yield return new InputItem(entry, System.IO.Path.Combine(baseDir, entry));
        }
    }

    private IEnumerable<InputItem> ReadJsonl()
    {
        var baseDir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(_path))!;
        foreach (var (number, bytes) in ReadLines(_path))
        {
            if (IsBlankOrComment(bytes))
            {
                continue;
            }

            yield return ParseRecord(number, bytes, baseDir);
        }
    }

    private InputItem ParseRecord(long number, byte[] bytes, string baseDir)
    {
        var fallbackKey = $"line {number}";
        if (!TryDecode(bytes, out _))
        {
            return new InputItem(fallbackKey, Error: $"Line {number} of {_path} is not valid UTF-8.");
        }

        try
        {
            using var doc = JsonDocument.Parse(bytes);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return new InputItem(fallbackKey, Error: $"Line {number} of {_path} is a JSON {root.ValueKind}, not a record object.");
            }

            var path = root.TryGetProperty("path", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString() : null;
            var key = root.TryGetProperty("key", out var k) && k.ValueKind is JsonValueKind.String or JsonValueKind.Number ? k.ToString() : path ?? fallbackKey;
            if (_forWorker)
            {
                return new InputItem(key, Record: WholeRecord(root, path, baseDir));
            }
            if (root.TryGetProperty("input", out var input))
            {
                if (input.ValueKind != JsonValueKind.Array)
                {
                    return new InputItem(key, Error: $"Line {number} of {_path}: \"input\" must be an array of numbers.");
                }

                var values = new float[input.GetArrayLength()];
                var i = 0;
                foreach (var v in input.EnumerateArray())
                {
                    if (v.ValueKind != JsonValueKind.Number)
                    {
                        return new InputItem(key, Error: $"Line {number} of {_path}: \"input\" holds a {v.ValueKind} at position {i}; only numbers are allowed.");
                    }

                    values[i++] = v.GetSingle();
                }

                return new InputItem(key, Tensor: values);
            }

            return path is null
                ? new InputItem(key, Error: $"Line {number} of {_path} has neither a \"path\" nor an \"input\" field.")
                : new InputItem(key, System.IO.Path.Combine(baseDir, path));
        }
        catch (JsonException ex)
        {
            return new InputItem(fallbackKey, Error: $"Line {number} of {_path} is not valid JSON: {ex.Message}");
        }
    }

    /// <summary>The record as it is, but with a relative <c>path</c> made absolute (relative to the JSONL file), so a worker in any folder finds it.</summary>
    private static JsonElement WholeRecord(JsonElement root, string? path, string baseDir)
    {
        if (path is null || System.IO.Path.IsPathRooted(path))
        {
            return root.Clone();
        }

        var node = JsonObject.Create(root)!;
        node["path"] = System.IO.Path.Combine(baseDir, path);
        return JsonSerializer.SerializeToElement(node, CliJson.Default.JsonNode);
    }

    /// <summary>Lines as raw bytes (without the newline), numbered from 1, so one bad line cannot stop the rest.</summary>
    private static IEnumerable<(long Number, byte[] Bytes)> ReadLines(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var line = new List<byte>(256);
        long number = 0;
        int b;
        while ((b = stream.ReadByte()) >= 0)
        {
            if (b == '\n')
            {
                yield return (++number, TrimCr(line));
                line.Clear();
            }
            else
            {
                line.Add((byte)b);
            }
        }

        if (line.Count > 0)
        {
            yield return (++number, TrimCr(line));
        }
    }

    private static byte[] TrimCr(List<byte> line) =>
        line.Count > 0 && line[^1] == '\r' ? [.. line.Take(line.Count - 1)] : [.. line];

    private static bool IsBlankOrComment(byte[] line)
    {
        foreach (var b in line)
        {
            if (b is (byte)' ' or (byte)'\t')
            {
                continue;
            }

            return b == '#';
        }

        return true;
    }

    private static bool TryDecode(byte[] bytes, out string text)
    {
        try
        {
            text = StrictUtf8.GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            text = "";
            return false;
        }
    }
}
