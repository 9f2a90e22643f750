using System.Runtime.InteropServices;

namespace InferPool.Images;

/// <summary>How 8-bit RGB pixels become the model's input floats (channel order and scaling).</summary>
public abstract class PixelNormalization
{
    /// <summary>Writes one image's CHW floats from its RGBA bytes (row-major, width = height = <paramref name="size"/>).</summary>
    /// <param name="rgba">The pixels, 4 bytes each (R, G, B, A).</param>
    /// <param name="size">The side of the square image.</param>
    /// <param name="chw">Where the 3 × size × size floats go, channel by channel.</param>
    public abstract void Write(ReadOnlySpan<byte> rgba, int size, Span<float> chw);

    /// <summary>
    /// Caffe-style input: BGR channel order, 0–255 values, minus a per-pixel mean image given in BGR CHW.
    /// This is what the packaged ResNet-18 (a CNTK model) was trained on; its ResNetPreprocess.onnx does the same.
    /// </summary>
    /// <param name="meanBgrChw">The mean image, 3 × size × size values, B plane first.</param>
    public sealed class BgrMeanImage(float[] meanBgrChw) : PixelNormalization
    {
        /// <inheritdoc/>
        /// <exception cref="InvalidOperationException">The mean image is not the size of the input.</exception>
        public override void Write(ReadOnlySpan<byte> rgba, int size, Span<float> chw)
        {
            var plane = size * size;
            if (meanBgrChw.Length != 3 * plane)
            {
                throw new InvalidOperationException($"The mean image has {meanBgrChw.Length} values; a {size}x{size} input needs {3 * plane}.");
            }

            // Each pixel read once as a little-endian uint (R in the low byte), each plane written through its own span.
            var pixels = MemoryMarshal.Cast<byte, uint>(rgba[..(4 * plane)]);
            var blue = chw[..plane];
            var green = chw.Slice(plane, plane);
            var red = chw.Slice(2 * plane, plane);
            var meanBlue = meanBgrChw.AsSpan(0, plane);
            var meanGreen = meanBgrChw.AsSpan(plane, plane);
            var meanRed = meanBgrChw.AsSpan(2 * plane, plane);
            for (var p = 0; p < pixels.Length; p++)
            {
                var px = pixels[p];
                blue[p] = ((px >> 16) & 0xFF) - meanBlue[p];
                green[p] = ((px >> 8) & 0xFF) - meanGreen[p];
                red[p] = (px & 0xFF) - meanRed[p];
            }
        }
    }

    /// <summary>torchvision's ImageNet input: RGB, scaled to 0–1, minus mean and over standard deviation per channel.</summary>
    public sealed class ImageNet : PixelNormalization
    {
        private static readonly float[] Mean = [0.485f, 0.456f, 0.406f];
        private static readonly float[] Std = [0.229f, 0.224f, 0.225f];

        /// <inheritdoc/>
        public override void Write(ReadOnlySpan<byte> rgba, int size, Span<float> chw)
        {
            var plane = size * size;
            var pixels = MemoryMarshal.Cast<byte, uint>(rgba[..(4 * plane)]);
            var red = chw[..plane];
            var green = chw.Slice(plane, plane);
            var blue = chw.Slice(2 * plane, plane);
            for (var p = 0; p < pixels.Length; p++)
            {
                var px = pixels[p];
                red[p] = (((px & 0xFF) / 255f) - Mean[0]) / Std[0];
                green[p] = ((((px >> 8) & 0xFF) / 255f) - Mean[1]) / Std[1];
                blue[p] = ((((px >> 16) & 0xFF) / 255f) - Mean[2]) / Std[2];
            }
        }
    }
}
