using System.Buffers;
using SkiaSharp;

namespace InferPool.Images;

/// <summary>
/// Turns an image file into a model input: decode (refusing oversized images by their header first), apply
/// the EXIF orientation, resize the shorter side to <see cref="ResizeShorter"/>, take the centre
/// <see cref="Size"/>×<see cref="Size"/> crop, and write normalised CHW floats. Thread-safe; the pool runs it
/// on several prepare workers at once.
/// </summary>
public sealed class ImagePreprocessor
{
    /// <summary>The orientation draw replaces what is under it: every target pixel is covered, so blending would only cost time.</summary>
    private static readonly SKPaint Replace = new() { BlendMode = SKBlendMode.Src };

    /// <summary>The largest image accepted by default: 100 million pixels (a 10,000 × 10,000 photo), checked from the header.</summary>
    public const long DefaultMaxPixels = 100_000_000;

    private readonly PixelNormalization _normalization;
    private readonly TensorPool? _tensors;

    /// <summary>Creates a preparation with a square crop of <paramref name="size"/>.</summary>
    /// <param name="normalization">How pixels become floats.</param>
    /// <param name="size">The side of the square crop.</param>
    /// <param name="resizeShorter">The shorter side after resizing.</param>
    /// <param name="maxPixels">The largest image accepted, checked from the header.</param>
    /// <param name="tensors">Where output arrays come from; null to allocate each.</param>
    /// <exception cref="ArgumentOutOfRangeException">A size or the pixel limit is below 1, or the resize is smaller than the crop.</exception>
    /// <exception cref="ArgumentException">The tensor pool's arrays are not <see cref="OutputLength"/> long.</exception>
    public ImagePreprocessor(PixelNormalization normalization, int size = 224, int resizeShorter = 256, long maxPixels = DefaultMaxPixels, TensorPool? tensors = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(resizeShorter, size);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPixels, 1);
        _normalization = normalization;
        Size = size;
        ResizeShorter = resizeShorter;
        MaxPixels = maxPixels;
        _tensors = tensors is null || tensors.Length == OutputLength ? tensors : throw new ArgumentException($"The tensor pool holds arrays of {tensors.Length}; this preparation writes {OutputLength}.", nameof(tensors));
    }

    /// <summary>The side of the square crop fed to the model.</summary>
    public int Size { get; }

    /// <summary>The shorter side after resizing, before the crop.</summary>
    public int ResizeShorter { get; }

    /// <summary>Images with more pixels than this are refused from their header, before decoding (decompression bombs).</summary>
    public long MaxPixels { get; }

    /// <summary>Values per prepared image: 3 × size × size.</summary>
    public int OutputLength => 3 * Size * Size;

    /// <summary>Reads and prepares an image file.</summary>
    /// <param name="path">The image file.</param>
    /// <exception cref="InvalidDataException">The file is empty, not an image, truncated, or too large.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    /// <exception cref="UnauthorizedAccessException">The file may not be read.</exception>
    public float[] PrepareFile(string path)
    {
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var length = RandomAccess.GetLength(file);
        if (length > int.MaxValue)
        {
            throw new InvalidDataException($"The file is {length:N0} bytes, too large for an image.");
        }

        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Max(length, 1));
        try
        {
            var read = 0;
            while (read < length)
            {
                var n = RandomAccess.Read(file, buffer.AsSpan(read, (int)length - read), read);
                if (n == 0)
                {
                    break;
                }

                read += n;
            }

            return Prepare(buffer, read);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Prepares an encoded image.</summary>
    /// <param name="encoded">The file's bytes (PNG, JPEG, WebP, …).</param>
    /// <exception cref="InvalidDataException">The bytes are empty, not an image, truncated, or too large.</exception>
    public float[] Prepare(byte[] encoded) => Prepare(encoded, encoded?.Length ?? 0);

    private float[] Prepare(byte[] encoded, int length)
    {
        ArgumentNullException.ThrowIfNull(encoded);
        if (length == 0)
        {
            throw new InvalidDataException("The file is empty (0 bytes).");
        }

        using var codec = SKCodec.Create(new MemoryStream(encoded, 0, length, writable: false), out var result)
            ?? throw new InvalidDataException($"Not a decodable image ({Describe(result)}).");
        var (width, height) = (codec.Info.Width, codec.Info.Height);
        if (width <= 0 || height <= 0 || (long)width * height > MaxPixels)
        {
            throw new InvalidDataException($"The image is {width}x{height} = {(long)width * height:N0} pixels, over the limit of {MaxPixels:N0}; it is refused before decoding.");
        }

        using var decoded = Decode(codec);
        var oriented = Orient(decoded, codec.EncodedOrigin);
        var cropped = ArrayPool<byte>.Shared.Rent(Size * Size * 4);
        try
        {
            ResizeAndCrop(oriented, cropped);
            var chw = _tensors?.Rent() ?? new float[OutputLength];
            _normalization.Write(cropped.AsSpan(0, Size * Size * 4), Size, chw);
            return chw;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(cropped);
            if (!ReferenceEquals(oriented, decoded))
            {
                oriented.Dispose();
            }
        }
    }

    private SKBitmap Decode(SKCodec codec)
    {
        var info = new SKImageInfo(0, 0, SKColorType.Rgba8888, SKAlphaType.Premul).WithSize(DecodeSize(codec));
        var bitmap = new SKBitmap(info);
        try
        {
            var result = codec.GetPixels(info, bitmap.GetPixels());
            if (result != SKCodecResult.Success)
            {
                throw new InvalidDataException($"The image data could not be decoded ({Describe(result)}).");
            }

            bitmap.SetImmutable();
            return bitmap;
        }
        catch
        {
            bitmap.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The smallest size the codec can decode to directly (JPEG scales by n/8) that still leaves the shorter
    /// side at least <see cref="ResizeShorter"/>: for a large photo most of the decoding work, for no loss
    /// once it is resized anyway.
    /// </summary>
    private SKSizeI DecodeSize(SKCodec codec)
    {
        var full = codec.Info.Size;
        for (var eighths = 1; eighths < 8; eighths++)
        {
            var scaled = codec.GetScaledDimensions(eighths / 8f);
            if (Math.Min(scaled.Width, scaled.Height) >= ResizeShorter && scaled.Width < full.Width)
            {
                return scaled;
            }
        }

        return full;
    }

    /// <summary>The image turned upright; the source itself when it already is (the caller disposes both, once).</summary>
    private static SKBitmap Orient(SKBitmap source, SKEncodedOrigin origin)
    {
        if (origin is SKEncodedOrigin.TopLeft or SKEncodedOrigin.Default)
        {
            return source;
        }

        var swap = origin is SKEncodedOrigin.LeftTop or SKEncodedOrigin.RightTop or SKEncodedOrigin.RightBottom or SKEncodedOrigin.LeftBottom;
        var (w, h) = swap ? (source.Height, source.Width) : (source.Width, source.Height);
        var result = new SKBitmap(new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Premul));
        using var canvas = new SKCanvas(result);
        canvas.SetMatrix(OrientationMatrix(origin, source.Width, source.Height));
        using var image = SKImage.FromBitmap(source);
        canvas.DrawImage(image, 0, 0, new SKSamplingOptions(SKFilterMode.Nearest), Replace);
        return result;
    }

    /// <summary>The transform that maps stored pixels to display orientation (EXIF orientations 2–8).</summary>
    private static SKMatrix OrientationMatrix(SKEncodedOrigin origin, int w, int h) => origin switch
    {
        SKEncodedOrigin.TopRight => new SKMatrix(-1, 0, w, 0, 1, 0, 0, 0, 1),
        SKEncodedOrigin.BottomRight => new SKMatrix(-1, 0, w, 0, -1, h, 0, 0, 1),
        SKEncodedOrigin.BottomLeft => new SKMatrix(1, 0, 0, 0, -1, h, 0, 0, 1),
        SKEncodedOrigin.LeftTop => new SKMatrix(0, 1, 0, 1, 0, 0, 0, 0, 1),
        SKEncodedOrigin.RightTop => new SKMatrix(0, -1, h, 1, 0, 0, 0, 0, 1),
        SKEncodedOrigin.RightBottom => new SKMatrix(0, -1, h, -1, 0, w, 0, 0, 1),
        SKEncodedOrigin.LeftBottom => new SKMatrix(0, 1, 0, -1, 0, w, 0, 0, 1),
        _ => SKMatrix.Identity,
    };

    /// <summary>
    /// Resizes so the shorter side is <see cref="ResizeShorter"/> and writes the centre <see cref="Size"/>×<see cref="Size"/>
    /// as RGBA into <paramref name="target"/>: a bilinear sample of the matching source square. Bilinear sampling alone
    /// aliases below half scale, so a larger reduction first halves the square (each halving averages 2×2 pixels) until
    /// one bilinear step of at most 2× is left. (Skia's mipmapped filtering would do the same job, but it builds a whole
    /// mip chain of the source on every draw: measured 11 ms of a 15 ms preparation for a 550×660 PNG.)
    /// </summary>
    private void ResizeAndCrop(SKBitmap source, byte[] target)
    {
        var scale = (double)ResizeShorter / Math.Min(source.Width, source.Height);
        var side = Size / scale;
        var (left, top) = ((source.Width - side) / 2, (source.Height - side) / 2);
        var current = source;
        try
        {
            while (side > 2 * Size)
            {
                // An even, pixel-aligned block around the square, averaged 2×2 into a block of half the size. The
                // blocks live in native memory (a bitmap each, freed at once): a large photo's are megabytes, which a
                // shared array pool would keep a copy of on every thread that prepared one.
                var (x, w) = EvenSpan(left, left + side, current.Width);
                var (y, h) = EvenSpan(top, top + side, current.Height);
                var next = new SKBitmap(new SKImageInfo(w / 2, h / 2, SKColorType.Rgba8888, SKAlphaType.Premul));
                Resampling.Halve(current.GetPixelSpan(), current.RowBytes, x, y, w, h, next.GetPixelSpan());
                if (!ReferenceEquals(current, source))
                {
                    current.Dispose();
                }

                current = next;
                (left, top, side) = ((left - x) / 2, (top - y) / 2, side / 2);
            }

            Resampling.Bilinear(current.GetPixelSpan(), current.Width, current.Height, current.RowBytes, left, top, side, Size, target);
        }
        finally
        {
            if (!ReferenceEquals(current, source))
            {
                current.Dispose();
            }
        }
    }

    /// <summary>Whole pixels from at or before <paramref name="from"/> to at or after <paramref name="to"/>, an even count, inside 0..<paramref name="limit"/>.</summary>
    private static (int Start, int Length) EvenSpan(double from, double to, int limit)
    {
        var start = (int)Math.Floor(from);
        var length = (int)Math.Ceiling(to) - start;
        if (length % 2 == 1)
        {
            if (start + length < limit)
            {
                length++;
            }
            else if (start > 0)
            {
                start--;
                length++;
            }
            else
            {
                length--; // the whole side, and it is odd: its last pixel is left out
            }
        }

        return (start, length);
    }

    private static string Describe(SKCodecResult result) => result switch
    {
        SKCodecResult.IncompleteInput => "the file is truncated",
        SKCodecResult.ErrorInInput => "the file is corrupt",
        SKCodecResult.InvalidInput or SKCodecResult.Unimplemented => "unrecognised or unsupported image format",
        SKCodecResult.InvalidConversion => "unsupported pixel format",
        _ => result.ToString(),
    };
}
