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

            for (var p = 0; p < plane; p++)
            {
                var px = rgba.Slice(p * 4, 3);
                chw[p] = px[2] - meanBgrChw[p];
                chw[plane + p] = px[1] - meanBgrChw[plane + p];
                chw[(2 * plane) + p] = px[0] - meanBgrChw[(2 * plane) + p];
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
            for (var p = 0; p < plane; p++)
            {
                for (var c = 0; c < 3; c++)
                {
                    chw[(c * plane) + p] = ((rgba[(p * 4) + c] / 255f) - Mean[c]) / Std[c];
                }
            }
        }
    }
}
