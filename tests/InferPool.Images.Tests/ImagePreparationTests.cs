using InferPool.Images;
using SkiaSharp;

namespace InferPool.Images.Tests;

public sealed class ImagePreparationTests
{
    private static readonly ImagePreprocessor Preprocessor = new(new PixelNormalization.ImageNet());

    [Theory]
    [InlineData(3, 180)]
    [InlineData(6, 90)]
    [InlineData(8, 270)]
    public void Prepare_ExifOrientation_MatchesTheImageTurnedUpright(int orientation, int clockwiseDegrees)
    {
        // A real photo, stored turned with an EXIF orientation tag, must come out closest to the upright
        // photo, not to any other turn of it (JPEG re-encoding keeps them from being identical).
        using var photo = SKBitmap.Decode(Path.Combine(TestFiles.SampleImages, "chelsea.png"));
        using var even = new SKBitmap();
        Assert.True(photo.ExtractSubset(even, SKRectI.Create(0, 0, 450, 300)));
        using var upright = even.Copy();
        using var stored = Rotate(upright, (360 - clockwiseDegrees) % 360);
        var fromTag = Preprocessor.Prepare(WithExifOrientation(EncodeJpeg(stored), orientation));

        var distances = new[] { 0, 90, 180, 270 }.ToDictionary(
            turn => turn,
            turn =>
            {
                using var turned = Rotate(upright, turn);
                return MeanAbsoluteDifference(fromTag, Preprocessor.Prepare(EncodeJpeg(turned)));
            });

        var closest = distances.MinBy(kv => kv.Value);
        Assert.Equal(0, closest.Key);
        Assert.True(distances.Where(kv => kv.Key != 0).All(kv => kv.Value > 3 * closest.Value), string.Join(", ", distances));
    }

    [Fact]
    public void Prepare_ImageOverThePixelLimit_IsRefusedFromItsHeader()
    {
        var small = new ImagePreprocessor(new PixelNormalization.ImageNet(), maxPixels: 1000);

        var ex = Assert.Throws<InvalidDataException>(() => small.PrepareFile(Path.Combine(TestFiles.SampleImages, "coffee.png")));
        Assert.Contains("600x400 = 240,000 pixels, over the limit of 1,000", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Prepare_GreyscaleAndColour_GiveThreeChannelsOfTheCropSize()
    {
        var grey = Preprocessor.PrepareFile(Path.Combine(TestFiles.SampleImages, "camera.png"));
        var colour = Preprocessor.PrepareFile(Path.Combine(TestFiles.SampleImages, "rocket.jpg"));

        Assert.Equal(3 * 224 * 224, grey.Length);
        Assert.Equal(3 * 224 * 224, colour.Length);
        var plane = 224 * 224;
        // A grey image has equal R, G and B before normalisation: the channels differ only by mean/std.
        Assert.Equal((grey[100] * 0.229f) + 0.485f, (grey[plane + 100] * 0.224f) + 0.456f, 3);
    }

    [Theory]
    [InlineData(1024)] // scale 0.25: two halvings, then bilinear
    [InlineData(2000)] // scale 0.128: three halvings
    [InlineData(660)] // scale 0.39: one halving
    public void Prepare_LargeImageWithAOnePixelPattern_IsAveragedToGreyNotAliased(int side)
    {
        // Black and white one-pixel stripes: a reduction that only samples (bilinear below half scale) keeps
        // stripes or moiré; one that averages gives an even mid grey.
        using var bitmap = new SKBitmap(side, side);
        for (var y = 0; y < side; y++)
        {
            for (var x = 0; x < side; x++)
            {
                bitmap.SetPixel(x, y, x % 2 == 0 ? SKColors.White : SKColors.Black);
            }
        }

        var raw = new ImagePreprocessor(new RawRgb()).Prepare(EncodePng(bitmap));

        var plane = raw.AsSpan(0, 224 * 224).ToArray();
        Assert.All(plane, v => Assert.InRange(v, 0.40f, 0.60f));
    }

    [Theory]
    [InlineData(300)] // one bilinear step
    [InlineData(1000)] // halvings first
    public void Prepare_HalfTransparentImage_IsItsColourOverBlack(int side)
    {
        // Transparent pixels come out as if laid over black (their colour times their opacity), whatever path the
        // resize takes: draws replace what is under them rather than blend with it.
        using var bitmap = new SKBitmap(new SKImageInfo(side, side, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        bitmap.Erase(new SKColor(200, 100, 50, 128));

        var raw = new ImagePreprocessor(new RawRgb()).Prepare(EncodePng(bitmap));

        var plane = 224 * 224;
        Assert.All(raw.AsSpan(0, plane).ToArray(), v => Assert.InRange(v, 99 / 255f, 102 / 255f));
        Assert.All(raw.AsSpan(plane, plane).ToArray(), v => Assert.InRange(v, 49 / 255f, 52 / 255f));
        Assert.All(raw.AsSpan(2 * plane, plane).ToArray(), v => Assert.InRange(v, 24 / 255f, 27 / 255f));
    }

    [Fact]
    public void Prepare_ImageOfResizeSide_IsItsCentreCropPixelForPixel()
    {
        // 256 x 256 resized to 256 is itself: every sample falls on a pixel centre, so the 224 crop must be exactly the
        // source's pixels 16..239 (a sampling grid off by half a pixel or one would blend neighbours instead).
        var random = new Random(7);
        using var bitmap = new SKBitmap(new SKImageInfo(256, 256, SKColorType.Rgba8888, SKAlphaType.Opaque));
        random.NextBytes(bitmap.GetPixelSpan());
        var pixels = bitmap.GetPixelSpan().ToArray();

        var raw = new ImagePreprocessor(new RawRgb()).Prepare(EncodePng(bitmap));

        var plane = 224 * 224;
        for (var y = 0; y < 224; y++)
        {
            for (var x = 0; x < 224; x++)
            {
                var source = (((y + 16) * 256) + x + 16) * 4;
                for (var c = 0; c < 3; c++)
                {
                    Assert.Equal(pixels[source + c] / 255f, raw[(c * plane) + (y * 224) + x]);
                }
            }
        }
    }

    [Theory]
    [InlineData("chelsea.png")] // 451 x 300: one bilinear step of 0.85
    [InlineData("astronaut.png")] // 512 x 512: exactly half
    [InlineData("motorcycle_left.png")] // 741 x 500
    public void Prepare_SamplesAsSkiasBilinearDrawDoes(string file)
    {
        // The resize matches Skia's own bilinear draw of the same source square to within one level of 255.
        var path = Path.Combine(TestFiles.SampleImages, file);
        using var decoded = SKBitmap.Decode(path).Copy(SKColorType.Rgba8888);
        var scale = 256.0 / Math.Min(decoded.Width, decoded.Height);
        var side = 224 / scale;
        using var reference = new SKBitmap(new SKImageInfo(224, 224, SKColorType.Rgba8888, SKAlphaType.Premul));
        using (var canvas = new SKCanvas(reference))
        using (var image = SKImage.FromBitmap(decoded))
        using (var paint = new SKPaint { BlendMode = SKBlendMode.Src })
        {
            var square = SKRect.Create((float)((decoded.Width - side) / 2), (float)((decoded.Height - side) / 2), (float)side, (float)side);
            canvas.DrawImage(image, square, SKRect.Create(0, 0, 224, 224), new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.None), paint);
        }

        var raw = new ImagePreprocessor(new RawRgb()).PrepareFile(path);

        var expected = reference.GetPixelSpan();
        var plane = 224 * 224;
        for (var p = 0; p < plane; p++)
        {
            for (var c = 0; c < 3; c++)
            {
                Assert.InRange(Math.Abs((raw[(c * plane) + p] * 255) - expected[(p * 4) + c]), 0, 1.001);
            }
        }
    }

    [Fact]
    public void Normalizations_WriteEachChannelToItsPlane()
    {
        // Two pixels (R, G, B, A): ImageNet's planes are R, G, B scaled by their mean and deviation; the mean-image
        // normalisation's are B, G, R in 0-255 minus the mean image's value at the same place.
        byte[] rgba = [10, 20, 30, 255, 200, 150, 100, 0];
        var imageNet = new float[3 * 2];
        var bgr = new float[3 * 2];
        float[] mean = [1, 2, 3, 4, 5, 6];

        new PixelNormalization.ImageNet().Write(rgba, 1, imageNet.AsSpan(0, 3));
        new PixelNormalization.ImageNet().Write(rgba.AsSpan(4), 1, imageNet.AsSpan(3, 3));
        new PixelNormalization.BgrMeanImage([.. mean[..3]]).Write(rgba, 1, bgr.AsSpan(0, 3));
        new PixelNormalization.BgrMeanImage([.. mean[3..]]).Write(rgba.AsSpan(4), 1, bgr.AsSpan(3, 3));

        float[] expectedImageNet =
        [
            ((10 / 255f) - 0.485f) / 0.229f, ((20 / 255f) - 0.456f) / 0.224f, ((30 / 255f) - 0.406f) / 0.225f,
            ((200 / 255f) - 0.485f) / 0.229f, ((150 / 255f) - 0.456f) / 0.224f, ((100 / 255f) - 0.406f) / 0.225f,
        ];
        Assert.Equal(expectedImageNet, imageNet);
        Assert.Equal([30 - 1f, 20 - 2f, 10 - 3f, 100 - 4f, 150 - 5f, 200 - 6f], bgr);
    }

    private static byte[] EncodePng(SKBitmap bitmap)
    {
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>Pixel values scaled to 0..1, no mean or std: what the resize left.</summary>
    private sealed class RawRgb : PixelNormalization
    {
        public override void Write(ReadOnlySpan<byte> rgba, int size, Span<float> chw)
        {
            var plane = size * size;
            for (var i = 0; i < plane; i++)
            {
                chw[i] = rgba[4 * i] / 255f;
                chw[plane + i] = rgba[(4 * i) + 1] / 255f;
                chw[(2 * plane) + i] = rgba[(4 * i) + 2] / 255f;
            }
        }
    }

    private static SKBitmap Rotate(SKBitmap source, int clockwiseDegrees)
    {
        if (clockwiseDegrees == 0)
        {
            return source.Copy();
        }

        var swap = clockwiseDegrees is 90 or 270;
        var result = new SKBitmap(swap ? source.Height : source.Width, swap ? source.Width : source.Height);
        using var canvas = new SKCanvas(result);
        canvas.Translate(result.Width / 2f, result.Height / 2f);
        canvas.RotateDegrees(clockwiseDegrees);
        canvas.Translate(-source.Width / 2f, -source.Height / 2f);
        using var image = SKImage.FromBitmap(source);
        canvas.DrawImage(image, 0, 0, new SKSamplingOptions(SKFilterMode.Nearest), null);
        return result;
    }

    private static byte[] EncodeJpeg(SKBitmap bitmap)
    {
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Jpeg, 95);
        return data.ToArray();
    }

    /// <summary>Inserts an APP1 Exif segment holding only the orientation tag (0x0112) right after the JPEG's SOI marker.</summary>
    private static byte[] WithExifOrientation(byte[] jpeg, int orientation)
    {
        byte[] tiff =
        [
            (byte)'M', (byte)'M', 0, 42, 0, 0, 0, 8, // big-endian TIFF header, first IFD at offset 8
            0, 1, // one entry
            0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, (byte)orientation, 0, 0, // orientation, SHORT, count 1, value
            0, 0, 0, 0, // no next IFD
        ];
        byte[] header = [(byte)'E', (byte)'x', (byte)'i', (byte)'f', 0, 0];
        var length = 2 + header.Length + tiff.Length;
        byte[] segment = [0xFF, 0xE1, (byte)(length >> 8), (byte)length, .. header, .. tiff];
        return [.. jpeg[..2], .. segment, .. jpeg[2..]];
    }

    private static double MeanAbsoluteDifference(float[] a, float[] b)
    {
        double sum = 0;
        for (var i = 0; i < a.Length; i++)
        {
            sum += Math.Abs(a[i] - b[i]);
        }

        return sum / a.Length;
    }
}
