using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace InferPool.Images;

/// <summary>
/// The resize behind a preparation, on 8-bit RGBA pixels in managed memory: 2×2 box halving for large reductions and a
/// bilinear sample of a source rectangle. Skia's raster pipeline did both as draws, and on x64 it ran its SSE2 path at
/// about 1.2 ms of every image's preparation (perf over 1,000 images); these take a fraction of that. Weights are 8-bit
/// fixed point, as in Skia's own 8-bit pipeline, so results differ from a float resize by at most one level.
/// </summary>
internal static class Resampling
{
    /// <summary>The 2×2 box average of a block of <paramref name="source"/>: each target pixel is the rounded mean of four.</summary>
    /// <param name="source">RGBA pixels, <paramref name="stride"/> bytes a row.</param>
    /// <param name="stride">Bytes from one source row to the next.</param>
    /// <param name="x">The block's first column.</param>
    /// <param name="y">The block's first row.</param>
    /// <param name="width">The block's width, even.</param>
    /// <param name="height">The block's height, even.</param>
    /// <param name="target">Where the width/2 × height/2 pixels go, packed rows.</param>
    public static void Halve(ReadOnlySpan<byte> source, int stride, int x, int y, int width, int height, Span<byte> target)
    {
        var (outWidth, outHeight) = (width / 2, height / 2);
        var targetPixels = MemoryMarshal.Cast<byte, uint>(target[..(outWidth * outHeight * 4)]);
        for (var row = 0; row < outHeight; row++)
        {
            var top = MemoryMarshal.Cast<byte, uint>(source.Slice(((y + (2 * row)) * stride) + (x * 4), width * 4));
            var bottom = MemoryMarshal.Cast<byte, uint>(source.Slice(((y + (2 * row) + 1) * stride) + (x * 4), width * 4));
            var line = targetPixels.Slice(row * outWidth, outWidth);
            for (var col = 0; col < outWidth; col++)
            {
                // Two channels a lane: each sum of four bytes fits in the lane's 16 bits.
                uint a = top[2 * col], b = top[(2 * col) + 1], c = bottom[2 * col], d = bottom[(2 * col) + 1];
                var evens = (a & 0x00FF00FF) + (b & 0x00FF00FF) + (c & 0x00FF00FF) + (d & 0x00FF00FF) + 0x00020002;
                var odds = ((a >> 8) & 0x00FF00FF) + ((b >> 8) & 0x00FF00FF) + ((c >> 8) & 0x00FF00FF) + ((d >> 8) & 0x00FF00FF) + 0x00020002;
                line[col] = ((evens >> 2) & 0x00FF00FF) | (((odds >> 2) & 0x00FF00FF) << 8);
            }
        }
    }

    /// <summary>
    /// Samples the rectangle (<paramref name="left"/>, <paramref name="top"/>, <paramref name="side"/> square) of the source
    /// into <paramref name="size"/> × <paramref name="size"/> pixels, bilinear, pixel centres at half coordinates and
    /// the source's edge pixels repeated beyond it. Done in two passes: the two source rows a target row falls between are
    /// blended (vectorized) over the columns needed, then each target pixel blends two neighbours of that row.
    /// </summary>
    /// <param name="source">RGBA pixels, <paramref name="stride"/> bytes a row.</param>
    /// <param name="width">The source's width in pixels.</param>
    /// <param name="height">The source's height in pixels.</param>
    /// <param name="stride">Bytes from one source row to the next.</param>
    /// <param name="left">The rectangle's left edge, in source pixels.</param>
    /// <param name="top">The rectangle's top edge.</param>
    /// <param name="side">The rectangle's width and height.</param>
    /// <param name="size">The target's side.</param>
    /// <param name="target">Where the size × size pixels go, packed rows.</param>
    public static void Bilinear(ReadOnlySpan<byte> source, int width, int height, int stride, double left, double top, double side, int size, Span<byte> target)
    {
        var scale = side / size;
        Span<int> columns = size <= 1024 ? stackalloc int[size] : new int[size];
        Span<int> columnWeights = size <= 1024 ? stackalloc int[size] : new int[size];
        for (var i = 0; i < size; i++)
        {
            (columns[i], columnWeights[i]) = Tap(left + ((i + 0.5) * scale) - 0.5, width);
        }

        var first = columns[0];
        var span = Math.Min(columns[size - 1] + 1, width - 1) - first + 1;
        // One pixel more than the span: the last one again, so that every pixel has a right neighbour to read.
        Span<ushort> blended = span <= 2048 ? stackalloc ushort[(span + 1) * 4] : new ushort[(span + 1) * 4];
        for (var row = 0; row < size; row++)
        {
            var (y0, wy) = Tap(top + ((row + 0.5) * scale) - 0.5, height);
            var y1 = Math.Min(y0 + 1, height - 1);
            BlendRows(source.Slice((y0 * stride) + (first * 4), span * 4), source.Slice((y1 * stride) + (first * 4), span * 4), wy, blended);
            blended.Slice((span - 1) * 4, 4).CopyTo(blended[(span * 4)..]);
            BlendColumns(blended, columns, columnWeights, first, target.Slice(row * size * 4, size * 4));
        }
    }

    /// <summary>Each target pixel of a row from two neighbours of the vertically blended row, at its column's weight.</summary>
    private static void BlendColumns(ReadOnlySpan<ushort> blended, ReadOnlySpan<int> columns, ReadOnlySpan<int> weights, int first, Span<byte> line)
    {
        if (Vector128.IsHardwareAccelerated)
        {
            var pixels = MemoryMarshal.Cast<byte, uint>(line);
            var half = Vector128.Create(32768u);
            for (var i = 0; i < pixels.Length; i++)
            {
                // Eight values: the pixel's four channels, then its right neighbour's.
                var both = Vector128.Create(blended.Slice((columns[i] - first) * 4, 8));
                var (left, right) = Vector128.Widen(both);
                var sum = (left * (uint)(256 - weights[i])) + (right * (uint)weights[i]) + half;
                var narrowed = Vector128.Narrow(Vector128.Narrow(sum >>> 16, sum >>> 16), Vector128<ushort>.Zero);
                pixels[i] = narrowed.AsUInt32().ToScalar();
            }

            return;
        }

        for (var i = 0; i < line.Length / 4; i++)
        {
            var at = (columns[i] - first) * 4;
            int w1 = weights[i], w0 = 256 - w1;
            for (var c = 0; c < 4; c++)
            {
                line[(i * 4) + c] = (byte)(((blended[at + c] * w0) + (blended[at + 4 + c] * w1) + 32768) >> 16);
            }
        }
    }

    /// <summary>The pixel at or left of a coordinate (clamped into the image) and the next one's weight out of 256.</summary>
    private static (int Pixel, int Weight) Tap(double coordinate, int limit)
    {
        var clamped = Math.Clamp(coordinate, 0, limit - 1);
        var pixel = (int)clamped;
        return (pixel, (int)Math.Round((clamped - pixel) * 256));
    }

    /// <summary>a × (256 − w) + b × w for every byte: 8.8 fixed point, at most 255 × 256, so it fits a ushort.</summary>
    private static void BlendRows(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, int weight, Span<ushort> target)
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated && a.Length >= Vector<byte>.Count)
        {
            var w0 = new Vector<ushort>((ushort)(256 - weight));
            var w1 = new Vector<ushort>((ushort)weight);
            var lanes = Vector<ushort>.Count;
            for (; i <= a.Length - Vector<byte>.Count; i += Vector<byte>.Count)
            {
                Vector.Widen(new Vector<byte>(a[i..]), out var aLow, out var aHigh);
                Vector.Widen(new Vector<byte>(b[i..]), out var bLow, out var bHigh);
                ((aLow * w0) + (bLow * w1)).CopyTo(target[i..]);
                ((aHigh * w0) + (bHigh * w1)).CopyTo(target[(i + lanes)..]);
            }
        }

        for (; i < a.Length; i++)
        {
            target[i] = (ushort)((a[i] * (256 - weight)) + (b[i] * weight));
        }
    }
}
