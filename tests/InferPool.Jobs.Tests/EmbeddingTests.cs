using InferPool.Images;
using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;
using InferPool.Jobs.Parts;
using InferPool.Devices;
using InferPool.Onnx;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;
using Parquet.Serialization;
using SkiaSharp;

namespace InferPool.Jobs.Tests;

public sealed class EmbeddingTests : TempFolderTest
{
    private const int EmbeddingSize = 512;

    [Fact]
    public async Task Run_PoolWithReplicasAndBatches_MatchesAPlainSequentialLoop()
    {
        var choice = ModelChoice.Resolve("resnet18");
        var output = Path.Combine(Dir, "out");
        var summary = await RunJobAsync(TestFiles.SampleImages, output, replicas: 2, batch: 4, "parquet");

        Assert.Equal(20, summary.Items);
        Assert.Equal(0, summary.Failed);
        var rows = await PartFiles.ReadParquetAsync(output);
        Assert.Equal(20, rows.Count);

        // The plain loop: the original (unrewritten) model, one session, one image per call.
        var preprocessor = new ImagePreprocessor(choice.Normalization);
        using var session = new InferenceSession(TestFiles.BuiltInModel);
        foreach (var file in Directory.GetFiles(TestFiles.SampleImages).Where(f => InputSource.ImageExtensions.Contains(Path.GetExtension(f))))
        {
            var key = Path.GetFileName(file);
            var tensor = preprocessor.PrepareFile(file);
            using var input = OrtValue.CreateTensorValueFromMemory(tensor, [1, 3, 224, 224]);
            using var runOptions = new RunOptions();
            using var result = session.Run(runOptions, ["Input247"], [input], ["Pooling395_Output_0"]);
            var expected = result[0].GetTensorDataAsSpan<float>().ToArray();

            var row = rows[key];
            Assert.Equal("ok", row["status"]);
            var actual = ((IEnumerable<float>)row["embedding"]!).ToArray();
            Assert.Equal(EmbeddingSize, actual.Length);
            for (var i = 0; i < EmbeddingSize; i++)
            {
                Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * Math.Max(1, Math.Abs(expected[i])), $"{key}[{i}]: {expected[i]} vs {actual[i]}");
            }
        }
    }

    [Fact]
    public async Task Run_ParquetOutput_HasTheDocumentedColumnsAndOneRowPerImage()
    {
        var output = Path.Combine(Dir, "out");
        await RunJobAsync(TestFiles.SampleImages, output, replicas: 2, batch: 1, "parquet");

        var part = Assert.Single(Directory.GetFiles(output, "part-*"));
        Assert.True(File.Exists(Path.Combine(output, JobJournal.FileName)));
        Assert.EndsWith("part-00000.parquet", part, StringComparison.Ordinal);
        await using var stream = File.OpenRead(part);
        var data = await ParquetSerializer.DeserializeUntypedAsync(stream);
        Assert.Equal(["key", "status", "error", "embedding", "device", "replica", "attempts"], data.Schema.Fields.Select(f => f.Name));
        Assert.Equal(20, data.Data.Count);
        Assert.Equal(
            Directory.GetFiles(TestFiles.SampleImages, "*.*").Select(Path.GetFileName).Where(n => n != "SOURCES.md").Order(StringComparer.Ordinal),
            data.Data.Select(r => (string)r["key"]!));
        Assert.All(data.Data, r =>
        {
            Assert.Equal("cpu", r["device"]);
            Assert.StartsWith("cpu#", (string)r["replica"]!, StringComparison.Ordinal);
            Assert.Equal(1, r["attempts"]);
            Assert.Equal(EmbeddingSize, ((System.Collections.ICollection)r["embedding"]!).Count);
        });
    }

    [Fact]
    public async Task Embeddings_TwoCropsOfOnePhoto_AreEachOthersNearestNeighbours()
    {
        var images = Path.Combine(Dir, "images");
        Directory.CreateDirectory(images);
        foreach (var file in Directory.GetFiles(TestFiles.SampleImages).Where(f => !f.EndsWith("chelsea.png", StringComparison.Ordinal) && !f.EndsWith(".md", StringComparison.Ordinal)))
        {
            File.Copy(file, Path.Combine(images, Path.GetFileName(file)));
        }

        // Two overlapping crops of the cat photo, written as real PNG files.
        using (var cat = SKBitmap.Decode(Path.Combine(TestFiles.SampleImages, "chelsea.png")))
        {
            SaveCrop(cat, SKRectI.Create(0, 0, cat.Width * 3 / 4, cat.Height), Path.Combine(images, "cat-left.png"));
            SaveCrop(cat, SKRectI.Create(cat.Width / 4, cat.Height / 10, cat.Width * 3 / 4, cat.Height * 9 / 10), Path.Combine(images, "cat-right.png"));
        }

        var output = Path.Combine(Dir, "out");
        await RunJobAsync(images, output, replicas: 2, batch: 2, "jsonl");
        var rows = await PartFiles.ReadJsonlAsync(output);

        Assert.Equal("cat-right.png", NearestNeighbour(rows, "cat-left.png"));
        Assert.Equal("cat-left.png", NearestNeighbour(rows, "cat-right.png"));

        // And the two views of the stereo pair find each other too.
        Assert.Equal("motorcycle_right.png", NearestNeighbour(rows, "motorcycle_left.png"));
        Assert.Equal("motorcycle_left.png", NearestNeighbour(rows, "motorcycle_right.png"));
    }

    [Fact]
    public void BgrMeanImageNormalisation_MatchesThePackagedPreprocessingModel()
    {
        var prep = Path.Combine(ModelChoice.BuiltInDirectory, "ResNetPreprocess.onnx");
        var raw = new ImagePreprocessor(new RawRgb()).PrepareFile(Path.Combine(TestFiles.SampleImages, "coffee.png"));
        var ours = new ImagePreprocessor(ModelChoice.Resolve("resnet18").Normalization).PrepareFile(Path.Combine(TestFiles.SampleImages, "coffee.png"));

        using var session = new InferenceSession(prep);
        using var input = OrtValue.CreateTensorValueFromMemory(raw, [1, 3, 224, 224]);
        using var runOptions = new RunOptions();
        using var result = session.Run(runOptions, ["OriginalInput"], [input], ["PreprocessedInput"]);
        var theirs = result[0].GetTensorDataAsSpan<float>().ToArray();

        Assert.Equal(theirs.Length, ours.Length);
        for (var i = 0; i < ours.Length; i++)
        {
            Assert.True(Math.Abs(theirs[i] - ours[i]) < 1e-4, $"value {i}: {theirs[i]} vs {ours[i]}");
        }
    }

    private static void SaveCrop(SKBitmap source, SKRectI rect, string path)
    {
        using var crop = new SKBitmap(rect.Width, rect.Height);
        Assert.True(source.ExtractSubset(crop, rect));
        using var image = SKImage.FromBitmap(crop);
        using var png = image.Encode(SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, png.ToArray());
    }

    private static string NearestNeighbour(Dictionary<string, float[]> rows, string key)
    {
        var query = rows[key];
        return rows.Where(kv => kv.Key != key).MaxBy(kv => Cosine(query, kv.Value)).Key;
    }

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (var i = 0; i < a.Length; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += b[i] * b[i];
        }

        return dot / Math.Sqrt(na * nb);
    }

    private static async Task<JobSummary> RunJobAsync(string input, string output, int replicas, int batch, string format)
    {
        var options = new JobOptions
        {
            Input = InputSource.Open(input),
            Engine = OnnxEngine.Load("resnet18"),
            OutputDirectory = output,
            Plan = ReplicaPlan.Cpu(replicas),
            IntraOpThreads = 1,
            BatchSize = batch,
            Format = OutputFormat.Parse(format),
            PrepareWorkers = 2,
            RowsPerPart = 10_000,
        };
        return await new InferenceJob(options, NullLogger.Instance, TimeProvider.System).RunAsync();
    }

    /// <summary>RGB 0–255 as floats, what the packaged preprocessing model takes.</summary>
    private sealed class RawRgb : PixelNormalization
    {
        public override void Write(ReadOnlySpan<byte> rgba, int size, Span<float> chw)
        {
            var plane = size * size;
            for (var p = 0; p < plane; p++)
            {
                for (var c = 0; c < 3; c++)
                {
                    chw[(c * plane) + p] = rgba[(p * 4) + c];
                }
            }
        }
    }
}
