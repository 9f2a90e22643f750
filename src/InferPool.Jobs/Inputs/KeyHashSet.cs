using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace InferPool.Jobs.Inputs;

/// <summary>
/// The 128-bit hashes of every key a run has seen, in memory that does not grow with the input. The newest keys are
/// in a hash set; when it holds <c>memoryLimit</c> of them they go, sorted, to a run file in the output folder, and
/// only a Bloom filter of each run (10 bits a key, 1 % false positives) stays in memory. Runs are merged as they pile
/// up (a run is merged into the one before it while that one is at most twice its size), so there are about
/// log₂(keys ÷ limit) of them. A key is looked up on disk (a binary search) only when a run's filter says it may be
/// there: for a new key, in about 1 % of the runs.
/// </summary>
/// <remarks>
/// A million keys: the set's limit (16,384 keys, 0.5 MB, allocated once at its full size so that it neither grows nor
/// leaves resized copies behind) plus 1.2 MB of filters, and 16 MB on disk, against about 45 MB of memory for a hash
/// set of them all. The run files are unlinked as soon as they are created where
/// the system allows it (Linux, macOS), so a crash leaves none behind; elsewhere they go when the set is disposed.
/// </remarks>
public sealed class KeyHashSet : IDisposable
{
    /// <summary>Keys held in memory before they go to disk.</summary>
    public const int DefaultMemoryLimit = 1 << 14;

    private const int KeyBytes = 16;

    private readonly string _directory;
    private readonly int _memoryLimit;
    private readonly HashSet<UInt128> _recent;
    private readonly List<Run> _runs = [];
    private UInt128[]? _sortBuffer;

    /// <summary>An empty set whose older hashes go to run files in <paramref name="directory"/>.</summary>
    /// <param name="directory">Where run files go (the job's output folder: it has room for the results, which are larger).</param>
    /// <param name="memoryLimit">Keys held in memory before they go to disk; the set for them is allocated at once.</param>
    public KeyHashSet(string directory, int memoryLimit = DefaultMemoryLimit)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentOutOfRangeException.ThrowIfLessThan(memoryLimit, 1);
        _directory = directory;
        _memoryLimit = memoryLimit;
        _recent = new HashSet<UInt128>(memoryLimit);
    }

    /// <summary>Keys in the set.</summary>
    public long Count { get; private set; }

    /// <summary>Run files on disk now (for tests).</summary>
    internal int Runs => _runs.Count;

    /// <summary>A key's 128-bit XXH3 hash (of its UTF-8 bytes): what the set holds.</summary>
    /// <param name="key">The key.</param>
    /// <returns>Its hash.</returns>
    public static UInt128 Hash(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        var length = Encoding.UTF8.GetMaxByteCount(key.Length);
        var rented = length > 512 ? ArrayPool<byte>.Shared.Rent(length) : null;
        Span<byte> bytes = rented ?? stackalloc byte[512];
        try
        {
            return XxHash128.HashToUInt128(bytes[..Encoding.UTF8.GetBytes(key, bytes)]);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>True when the hash is in the set.</summary>
    /// <param name="hash">A key's <see cref="Hash"/>.</param>
    /// <exception cref="IOException">The keys could not be read from the output folder.</exception>
    public bool Contains(UInt128 hash) => _recent.Contains(hash) || InRuns(hash);

    /// <summary>Adds a key's hash; false when it was already there.</summary>
    /// <param name="hash">A key's <see cref="Hash"/>.</param>
    /// <exception cref="IOException">The keys could not be written to or read from the output folder.</exception>
    public bool Add(UInt128 hash)
    {
        if (Contains(hash))
        {
            return false;
        }

        _recent.Add(hash);
        Count++;
        if (_recent.Count >= _memoryLimit)
        {
            Spill();
        }

        return true;
    }

    /// <summary>Closes (and so deletes) the run files.</summary>
    public void Dispose()
    {
        foreach (var run in _runs)
        {
            run.Dispose();
        }

        _runs.Clear();
        _recent.Clear();
    }

    private bool InRuns(UInt128 hash)
    {
        foreach (var run in _runs)
        {
            if (run.Contains(hash))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The keys in memory go to a new run, and the last runs merge while the one before is at most twice the size.</summary>
    private void Spill()
    {
        // One buffer for every spill: a new one each time was a large-object array left for a full collection (at the
        // old limit of 65,536 keys, 15 arrays of 1 MB over a million keys).
        var count = _recent.Count;
        _sortBuffer ??= new UInt128[_memoryLimit];
        _recent.CopyTo(_sortBuffer);
        Array.Sort(_sortBuffer, 0, count);
        _recent.Clear(); // keeps its capacity: the set does not grow again
        try
        {
            _runs.Add(Run.Write(_directory, _sortBuffer.AsSpan(0, count)));
            while (_runs.Count >= 2 && _runs[^2].Count <= 2 * _runs[^1].Count)
            {
                var (older, newer) = (_runs[^2], _runs[^1]);
                _runs.RemoveRange(_runs.Count - 2, 2);
                _runs.Add(Run.Merge(_directory, older, newer));
                older.Dispose();
                newer.Dispose();
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"The keys seen so far (to find repeated ones) could not be kept in {_directory}: {ex.Message}", ex);
        }
    }

    /// <summary>Sorted key hashes in a file, with a Bloom filter of them in memory.</summary>
    private sealed class Run : IDisposable
    {
        private const int BitsPerKey = 10;
        private const int Probes = 7;

        private readonly FileStream _file;
        private readonly ulong[] _filter;
        private readonly ulong _bits;

        private Run(FileStream file, long count)
        {
            _file = file;
            Count = count;
            _bits = (ulong)Math.Max(64, ((count * BitsPerKey) + 63) / 64 * 64);
            _filter = new ulong[_bits / 64];
        }

        public long Count { get; }

        public static Run Write(string directory, ReadOnlySpan<UInt128> sorted)
        {
            var run = new Run(Create(directory), sorted.Length);
            var writer = new Writer(run);
            foreach (var hash in sorted)
            {
                writer.Add(hash);
            }

            writer.Flush();
            return run;
        }

        public static Run Merge(string directory, Run older, Run newer)
        {
            var run = new Run(Create(directory), older.Count + newer.Count);
            var writer = new Writer(run);
            var (a, b) = (new Reader(older), new Reader(newer));
            while (a.HasCurrent || b.HasCurrent)
            {
                writer.Add(!b.HasCurrent || (a.HasCurrent && a.Current < b.Current) ? a.Take() : b.Take());
            }

            writer.Flush();
            return run;
        }

        /// <summary>True when the run holds the hash: the filter first, then a binary search of the file.</summary>
        public bool Contains(UInt128 hash)
        {
            if (!MayContain(hash))
            {
                return false;
            }

            Span<byte> bytes = stackalloc byte[KeyBytes];
            var (low, high) = (0L, Count - 1);
            while (low <= high)
            {
                var middle = low + ((high - low) / 2);
                ReadExactly(Handle, bytes, middle * KeyBytes);
                var found = BinaryPrimitives.ReadUInt128LittleEndian(bytes);
                if (found == hash)
                {
                    return true;
                }

                (low, high) = found < hash ? (middle + 1, high) : (low, middle - 1);
            }

            return false;
        }

        public void Dispose() => _file.Dispose();

        private SafeFileHandle Handle => _file.SafeFileHandle;

        private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset)
        {
            while (buffer.Length > 0)
            {
                var read = RandomAccess.Read(handle, buffer, offset);
                if (read == 0)
                {
                    throw new EndOfStreamException("A run of key hashes ended early.");
                }

                buffer = buffer[read..];
                offset += read;
            }
        }

        private static FileStream Create(string directory)
        {
            var path = Path.Combine(directory, $"_inferpool_keys-{Guid.NewGuid():N}.tmp");
            var file = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
            if (!OperatingSystem.IsWindows())
            {
                // Open files outlive their name here: a crash cannot leave this one behind.
                File.Delete(path);
            }

            return file;
        }

        private void Remember(UInt128 hash)
        {
            for (var i = 0; i < Probes; i++)
            {
                var (word, mask) = Probe(hash, i);
                _filter[word] |= mask;
            }
        }

        private bool MayContain(UInt128 hash)
        {
            for (var i = 0; i < Probes; i++)
            {
                var (word, mask) = Probe(hash, i);
                if ((_filter[word] & mask) == 0)
                {
                    return false;
                }
            }

            return true;
        }

        /// <summary>The filter's <paramref name="i"/>th probe: double hashing over the key's two (already uniform) 64-bit halves.</summary>
        private (ulong Word, ulong Mask) Probe(UInt128 hash, int i)
        {
            var bit = ((ulong)hash + ((ulong)i * ((ulong)(hash >> 64) | 1))) % _bits;
            return (bit / 64, 1UL << (int)(bit % 64));
        }

        /// <summary>Writes a new run's hashes in order, a buffer at a time, and fills its filter.</summary>
        private sealed class Writer(Run run)
        {
            private readonly byte[] _buffer = new byte[1 << 16];
            private long _offset;
            private int _filled;

            public void Add(UInt128 hash)
            {
                if (_filled == _buffer.Length)
                {
                    Flush();
                }

                BinaryPrimitives.WriteUInt128LittleEndian(_buffer.AsSpan(_filled, KeyBytes), hash);
                _filled += KeyBytes;
                run.Remember(hash);
            }

            public void Flush()
            {
                RandomAccess.Write(run.Handle, _buffer.AsSpan(0, _filled), _offset);
                _offset += _filled;
                _filled = 0;
            }
        }

        /// <summary>Reads a run's hashes in order, a buffer at a time.</summary>
        private sealed class Reader(Run run)
        {
            private readonly byte[] _buffer = new byte[1 << 16];
            private long _offset;
            private int _filled;
            private int _at;

            public bool HasCurrent => Fill();

            public UInt128 Current => BinaryPrimitives.ReadUInt128LittleEndian(_buffer.AsSpan(_at, KeyBytes));

            public UInt128 Take()
            {
                var current = Current;
                _at += KeyBytes;
                return current;
            }

            private bool Fill()
            {
                if (_at < _filled)
                {
                    return true;
                }

                var length = (int)Math.Min(_buffer.Length, (run.Count * KeyBytes) - _offset);
                if (length <= 0)
                {
                    return false;
                }

                ReadExactly(run.Handle, _buffer.AsSpan(0, length), _offset);
                _offset += length;
                (_filled, _at) = (length, 0);
                return true;
            }
        }
    }
}
