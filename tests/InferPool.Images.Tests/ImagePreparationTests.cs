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
