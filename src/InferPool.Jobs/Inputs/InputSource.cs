using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace InferPool.Jobs.Inputs;

/// <summary>
/// Reads a run's inputs lazily: a folder (recursive, image files, in a stable sorted order), a list file
/// (one path per line), or a JSONL file of records (<c>{"key": …, "path": …}</c> or <c>{"key": …, "input": [floats]}</c>).
/// Reads can start at any item (<see cref="ReadAsync(long, long?, CancellationToken)"/>), so a shard of a large job
/// does not turn items 0…N-1 into items first: a folder is walked by name without a stat per file, and lines before
/// the start are only scanned for their end, never decoded or parsed.
/// </summary>
public sealed class InputSource
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
    private readonly string _textField = "text";
    private readonly TableReader? _table;
    private readonly bool _tableTexts;

    private InputSource(string path, Kind kind, bool forWorker)
    {
        _path = path;
        _kind = kind;
        _forWorker = forWorker;
    }

    private InputSource(string path, Kind kind, string textField)
        : this(path, kind, forWorker: false)
    {
        _textField = textField;
    }

    private InputSource(string path, TableReader table, bool texts)
        : this(path, Kind.Table, forWorker: false)
    {
        _table = table;
        _tableTexts = texts;
    }

    private enum Kind
    {
        Folder,
        List,
        Jsonl,
        TextLines,
        TextJsonl,
        Table,
    }

    /// <summary>What the source is, for summaries: e.g. "folder samples/images".</summary>
    public string Description => $"{_kind switch { Kind.Folder => "folder", Kind.List => "list file", Kind.TextLines => "text file", Kind.Table => "table", _ => "JSONL file" }} {_path}";

    /// <summary>True when the items are texts (<see cref="InputItem.Text"/>), for a text model.</summary>
    public bool HoldsTexts => _kind is Kind.TextLines or Kind.TextJsonl || _tableTexts;

    /// <summary>
    /// True when the source's keys cannot repeat: a folder's relative paths, a text file's line numbers, a table's row
    /// numbers. A job then keeps no set of the keys it has seen. Lists, JSONL keys and key columns can repeat.
    /// </summary>
    public bool KeysAreUnique => _kind is Kind.Folder or Kind.TextLines || (_kind == Kind.Table && _table!.KeyColumn is null);

    /// <summary>Each item is a file (<see cref="InputItem.Path"/>): a folder's or a list file's, rather than a record, a text or a table row.</summary>
    public bool ItemsAreFiles => _kind is Kind.Folder or Kind.List;

    /// <summary>The column names of a table input (CSV or Parquet), in order; empty for other inputs.</summary>
    public IReadOnlyList<string> Columns => _table?.Columns ?? [];

    /// <summary>
    /// Opens a CSV (<c>.csv</c>, <c>.tsv</c>) or Parquet (<c>.parquet</c>) file: each row is an item whose record is its
    /// cells by column name (numbers and booleans as such; a CSV cell that reads as neither is a string, an empty one
    /// null), or whose text is its text column. CSV streams; Parquet is read one row group at a time.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="table">The key column, the text column, and the columns the job needs.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">A column the options name is not in the file; the message names it and the file.</exception>
    public static InputSource OpenTable(string path, TableOptions table)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(table);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The table '{path}' does not exist.", path);
        }

        return new InputSource(path, TableReader.Open(path, table), table.TextColumn is not null);
    }

    /// <summary>True when <paramref name="path"/> names a table by its extension (.csv, .tsv, .parquet).</summary>
    /// <param name="path">The input path.</param>
    public static bool IsTable(string path) => TableReader.IsTable(path);

    /// <summary>The full path of the input.</summary>
    public string FullPath => System.IO.Path.GetFullPath(_path);

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
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path))
        {
            return new InputSource(path, Kind.Folder, forWorker);
        }

        if (TableReader.IsTable(path) && File.Exists(path))
        {
            return OpenTable(path, new TableOptions());
        }

        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The input '{path}' does not exist (expected a folder of images, a list file, or a .jsonl file).", path);
        }

        return new InputSource(path, path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) ? Kind.Jsonl : Kind.List, forWorker);
    }

    /// <summary>
    /// Opens texts for a text model: a .jsonl file of records with a text field (keyed by their <c>key</c> field, else
    /// <c>line N</c>), a CSV or Parquet file with a text column (<see cref="OpenTable"/>), or any other file with one
    /// text per line (keyed by line number, from 1). Every line is an item: an
    /// empty line, a line that is not valid UTF-8, a record that is not JSON or has no text fails alone, with its reason.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="textField">The field of a JSONL record that holds its text.</param>
    /// <exception cref="FileNotFoundException">The file does not exist (a folder is not a text input).</exception>
    public static InputSource OpenTexts(string path, string textField = "text")
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentException.ThrowIfNullOrEmpty(textField);
        if (TableReader.IsTable(path))
        {
            return OpenTable(path, new TableOptions { TextColumn = textField });
        }

        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The text input '{path}' does not exist (expected a file with one text per line, or a .jsonl file of records with a \"{textField}\" field).", path);
        }

        return new InputSource(path, path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) ? Kind.TextJsonl : Kind.TextLines, textField);
    }

    /// <summary>The items, read lazily.</summary>
    /// <param name="cancellationToken">Stops the reading.</param>
    public IAsyncEnumerable<InputItem> ReadAsync(CancellationToken cancellationToken = default) => ReadAsync(0, null, cancellationToken);

    /// <summary>Items <paramref name="first"/> to <paramref name="first"/> + <paramref name="count"/> - 1 (to the end when count is null), read lazily.</summary>
    /// <param name="first">The index of the first item, counted as <see cref="ReadAsync(CancellationToken)"/> counts them.</param>
    /// <param name="count">How many items at most; null for all the rest.</param>
    /// <param name="cancellationToken">Stops the reading.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="first"/> or <paramref name="count"/> is negative.</exception>
    public IAsyncEnumerable<InputItem> ReadAsync(long first, long? count, CancellationToken cancellationToken = default) =>
        Read(first, count, null, cancellationToken);

    /// <summary>
    /// Items <paramref name="first"/> to <paramref name="first"/> + <paramref name="count"/> - 1 of a line-based input,
    /// reading from <paramref name="from"/> (item <paramref name="first"/>'s <see cref="InputItem.Position"/>, as an
    /// earlier read gave it) instead of from the start of the file; other inputs are read from their start.
    /// </summary>
    /// <param name="first">The index of the first item.</param>
    /// <param name="count">How many items at most; null for all the rest.</param>
    /// <param name="from">Where item <paramref name="first"/>'s line starts.</param>
    /// <param name="cancellationToken">Stops the reading.</param>
    public IAsyncEnumerable<InputItem> ReadAsync(long first, long? count, RecordPosition from, CancellationToken cancellationToken = default) =>
        Read(first, count, from, cancellationToken);

    private IAsyncEnumerable<InputItem> Read(long first, long? count, RecordPosition? from, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(first);
        ArgumentOutOfRangeException.ThrowIfNegative(count ?? 0);
        var items = _kind switch
        {
            Kind.Folder => SkipLong(WalkFolder(_path, _forWorker), first).Select(f => new InputItem { Key = Relative(f), Path = f }),
            Kind.List => ReadList(first, from),
            Kind.TextLines => ReadTextLines(first, from),
            Kind.TextJsonl => ReadJsonl(first, from),
            Kind.Table => _table!.Read(first),
            _ => ReadJsonl(first, from),
        };
        return Stream(count is { } n ? TakeLong(items, n) : items, cancellationToken);
    }

    private static async IAsyncEnumerable<InputItem> Stream(IEnumerable<InputItem> items, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        foreach (var item in items)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return item;
        }

        await Task.CompletedTask.ConfigureAwait(false);
    }

    private static IEnumerable<T> SkipLong<T>(IEnumerable<T> items, long count)
    {
        foreach (var item in items)
        {
            if (count > 0)
            {
                count--;
                continue;
            }

            yield return item;
        }
    }

    private static IEnumerable<T> TakeLong<T>(IEnumerable<T> items, long count)
    {
        if (count == 0)
        {
            yield break;
        }

        foreach (var item in items)
        {
            yield return item;
            if (--count == 0)
            {
                yield break;
            }
        }
    }

    /// <summary>
    /// Checks a list file whole for a key given twice (a folder's keys, its relative paths, are unique by
    /// construction; JSONL records are checked as they stream). Memory does not grow with the list: the keys'
    /// hashes go to a <see cref="KeyHashSet"/> that spills to <paramref name="spillDirectory"/>; when one repeats,
    /// the list is read again for the line that gave it first.
    /// </summary>
    /// <param name="spillDirectory">Where the key hashes of a long list go (null: the system's temporary folder).</param>
    /// <exception cref="DuplicateKeyException">A key occurs twice; the message gives both line numbers.</exception>
    public void CheckKeysUnique(string? spillDirectory = null)
    {
        if (_kind != Kind.List)
        {
            return;
        }

        using var seen = new KeyHashSet(spillDirectory ?? Path.GetTempPath());
        foreach (var (number, key) in ListKeys())
        {
            if (!seen.Add(KeyHashSet.Hash(key)))
            {
                var first = ListKeys().First(k => k.Key == key).Number;
                throw new DuplicateKeyException(key, $"line {first} of {_path}", $"line {number}");
            }
        }
    }

    /// <summary>A list file's keys as ReadList gives them, with their line numbers.</summary>
    private IEnumerable<(long Number, string Key)> ListKeys()
    {
        foreach (var (number, bytes, _) in ReadRecordLines(_path, 0))
        {
            if (TryDecode(bytes, out var text))
            {
                yield return (number, text.Trim());
            }
        }
    }

    /// <summary>Counts the items without reading them, for progress and ETA.</summary>
    public long Count() => _kind switch
    {
        Kind.Folder => WalkFolder(_path, _forWorker).LongCount(),
        Kind.Table => _table!.Count(),
        _ => ScanRecordLines(_path, long.MaxValue, _kind == Kind.TextLines).LongCount(),
    };

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

    private IEnumerable<InputItem> ReadList(long first, RecordPosition? from)
    {
        var baseDir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(_path))!;
        foreach (var (number, bytes, position) in ReadRecordLines(_path, first, from: from))
        {
            if (!TryDecode(bytes, out var text))
            {
                yield return InputItem.Unusable($"line {number}", $"Line {number} of {_path} is not valid UTF-8.") with { Position = position };
                continue;
            }

            var entry = text.Trim();
            yield return new InputItem { Key = entry, Path = System.IO.Path.Combine(baseDir, entry), Position = position };
        }
    }

    private IEnumerable<InputItem> ReadTextLines(long first, RecordPosition? from)
    {
        foreach (var (number, bytes, position) in ReadRecordLines(_path, first, everyLine: true, from))
        {
            var key = number.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var item = TryDecode(bytes, out var text)
                ? new InputItem { Key = key, Text = text }
                : InputItem.Unusable(key, $"Line {number} of {_path} is not valid UTF-8.");
            yield return item with { Position = position };
        }
    }

    private IEnumerable<InputItem> ReadJsonl(long first, RecordPosition? from)
    {
        var baseDir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(_path))!;
        foreach (var (number, bytes, position) in ReadRecordLines(_path, first, from: from))
        {
            yield return ParseRecord(number, bytes, baseDir) with { Position = position };
        }
    }

    private InputItem ParseRecord(long number, byte[] bytes, string baseDir)
    {
        var fallbackKey = $"line {number}";
        if (!TryDecode(bytes, out _))
        {
            return InputItem.Unusable(fallbackKey, $"Line {number} of {_path} is not valid UTF-8.");
        }

        try
        {
            using var doc = JsonDocument.Parse(bytes);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return InputItem.Unusable(fallbackKey, $"Line {number} of {_path} is a JSON {root.ValueKind}, not a record object.");
            }

            // A text record is keyed by its key or its line; any other record may also be keyed by its path.
            var path = _kind != Kind.TextJsonl && root.TryGetProperty("path", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString() : null;
            var key = root.TryGetProperty("key", out var k) && k.ValueKind is JsonValueKind.String or JsonValueKind.Number ? k.ToString() : path ?? fallbackKey;
            if (_kind == Kind.TextJsonl)
            {
                return !root.TryGetProperty(_textField, out var text)
                    ? InputItem.Unusable(key, $"Line {number} of {_path} has no \"{_textField}\" field.")
                    : text.ValueKind != JsonValueKind.String
                        ? InputItem.Unusable(key, $"Line {number} of {_path}: \"{_textField}\" is a JSON {text.ValueKind}, not a string.")
                        : new InputItem { Key = key, Text = text.GetString() };
            }

            if (_forWorker)
            {
                return new InputItem { Key = key, Record = WholeRecord(root, path, baseDir) };
            }

            if (root.TryGetProperty("input", out _) || root.TryGetProperty("inputs", out _))
            {
                return new InputItem { Key = key, Record = root.Clone() };
            }

            return path is null
                ? InputItem.Unusable(key, $"Line {number} of {_path} has neither a \"path\" nor an \"input\" or \"inputs\" field.")
                : new InputItem { Key = key, Path = System.IO.Path.Combine(baseDir, path) };
        }
        catch (JsonException ex)
        {
            return InputItem.Unusable(fallbackKey, $"Line {number} of {_path} is not valid JSON: {ex.Message}");
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
        return JsonSerializer.SerializeToElement(node, JobsJson.Default.JsonNode);
    }

    /// <summary>
    /// The lines that hold a record (not blank, not a # comment; or, with <paramref name="everyLine"/>, every line),
    /// numbered from 1 among all lines. Records before the <paramref name="first"/>th come with null bytes: they are
    /// scanned for their line end and never copied, so counting and skipping cost no allocation per line.
    /// </summary>
    /// <remarks>
    /// With <paramref name="from"/>, scanning starts at that byte offset, as record number <paramref name="first"/>
    /// after <see cref="RecordPosition.LinesBefore"/> lines. Each record comes with the offset its line starts at.
    /// </remarks>
    private static IEnumerable<(long Number, byte[]? Bytes, long Start)> ScanRecordLines(string path, long first, bool everyLine = false, RecordPosition? from = null)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var buffer = new byte[1 << 16];
        var line = new List<byte>(256);
        long number = 0;
        long records = 0;
        long bufferStart = 0;
        if (from is { } position)
        {
            stream.Seek(position.Offset, SeekOrigin.Begin);
            (bufferStart, number, records) = (position.Offset, position.LinesBefore, first);
        }

        var lineStart = bufferStart;
        var atLineStart = true;
        var isRecord = everyLine;
        var partial = false;
        int read;
        while ((read = stream.Read(buffer)) > 0)
        {
            for (var i = 0; i < read; i++)
            {
                var b = buffer[i];
                if (b == '\n')
                {
                    number++;
                    if (isRecord)
                    {
                        yield return (number, records++ >= first ? TrimCr(line) : null, lineStart);
                    }

                    line.Clear();
                    lineStart = bufferStart + i + 1;
                    atLineStart = true;
                    isRecord = everyLine;
                    partial = false;
                    continue;
                }

                partial = true;
                if (!everyLine && atLineStart && b is not ((byte)' ' or (byte)'\t' or (byte)'\r'))
                {
                    atLineStart = false;
                    isRecord = b != '#';
                }

                if (isRecord && records >= first)
                {
                    line.Add(b);
                }
            }

            bufferStart += read;
        }

        // The last line, when the file does not end with a line break.
        if (isRecord && partial)
        {
            yield return (number + 1, records >= first ? TrimCr(line) : null, lineStart);
        }
    }

    private static IEnumerable<(long Number, byte[] Bytes, RecordPosition Position)> ReadRecordLines(string path, long first, bool everyLine = false, RecordPosition? from = null)
    {
        foreach (var (number, bytes, start) in ScanRecordLines(path, first, everyLine, from))
        {
            if (bytes is not null)
            {
                yield return (number, bytes, new RecordPosition(start, number - 1));
            }
        }
    }

    private static byte[] TrimCr(List<byte> line) =>
        line.Count > 0 && line[^1] == '\r' ? [.. line.Take(line.Count - 1)] : [.. line];

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
