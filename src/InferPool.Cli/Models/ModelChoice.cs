using InferPool.Cli.Images;
using InferPool.Onnx;
using Onnx;

namespace InferPool.Cli.Models;

/// <summary>
/// The model a run uses and how to feed it: the built-in ResNet-18 (<c>resnet18</c>) or any .onnx file.
/// </summary>
/// <param name="Name">What to call it in summaries.</param>
/// <param name="Path">The .onnx file.</param>
/// <param name="Normalization">How image pixels become input floats.</param>
/// <param name="ColumnNames">Output column name for each model output, by output name.</param>
internal sealed record ModelChoice(string Name, string Path, PixelNormalization Normalization, IReadOnlyDictionary<string, string> ColumnNames)
{
    public const string BuiltInName = "resnet18";

    /// <summary>Where the built-in model sits: next to the tool, copied there from its NuGet package at build time.</summary>
    public static string BuiltInDirectory => System.IO.Path.Combine(AppContext.BaseDirectory, "models", "resnet18");

    /// <summary>Resolves <c>resnet18</c> or a path.</summary>
    /// <exception cref="FileNotFoundException">The file (or the built-in model) is missing.</exception>
    public static ModelChoice Resolve(string nameOrPath)
    {
        if (string.Equals(nameOrPath, BuiltInName, StringComparison.OrdinalIgnoreCase))
        {
            var model = System.IO.Path.Combine(BuiltInDirectory, "ResNet18.onnx");
            var prep = System.IO.Path.Combine(BuiltInDirectory, "ResNetPreprocess.onnx");
            if (!File.Exists(model) || !File.Exists(prep))
            {
                throw new FileNotFoundException($"The built-in ResNet-18 is missing from {BuiltInDirectory}; rebuild the tool so it is copied from the Microsoft.ML.DnnImageFeaturizer.ResNet18 package.");
            }

            return new ModelChoice(
                BuiltInName,
                model,
                new PixelNormalization.BgrMeanImage(ReadMeanImage(prep)),
                new Dictionary<string, string>(StringComparer.Ordinal) { ["Pooling395_Output_0"] = "embedding" });
        }

        if (!File.Exists(nameOrPath))
        {
            throw new FileNotFoundException($"--model '{nameOrPath}' is neither 'resnet18' nor an existing .onnx file.");
        }

        return new ModelChoice(System.IO.Path.GetFileNameWithoutExtension(nameOrPath), System.IO.Path.GetFullPath(nameOrPath), new PixelNormalization.ImageNet(), new Dictionary<string, string>(StringComparer.Ordinal));
    }

    /// <summary>The output column for a model output: its mapped name, else the output's own name.</summary>
    public string ColumnFor(string outputName) => ColumnNames.TryGetValue(outputName, out var column) ? column : outputName;

    /// <summary>The image preparation that fits a model's input: a square crop of the input's size.</summary>
    /// <exception cref="NotSupportedException">The input is not a square 3-channel image.</exception>
    public ImagePreprocessor ImagePreparation(OnnxModel model, long maxPixels, TensorPool? tensors = null)
    {
        var shape = model.Input.ItemShape;
        if (shape.Count != 3 || shape[0] != 3 || shape[1] != shape[2] || shape[1] <= 0)
        {
            throw new NotSupportedException($"Model input {model.Input} is not a square 3-channel image [N,3,S,S]; feed it tensors through a JSONL file with an \"input\" field instead of image files.");
        }

        var size = (int)shape[1];
        return new ImagePreprocessor(Normalization, size, size * 256 / 224, maxPixels, tensors);
    }

    /// <summary>Reads the mean image (BGR, CHW) that the packaged preprocessing model subtracts.</summary>
    internal static float[] ReadMeanImage(string preprocessModel)
    {
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(preprocessModel));
        var mean = proto.Graph.Initializer.FirstOrDefault(i => i.Name == "MeanImage")
            ?? throw new InvalidDataException($"{preprocessModel} has no MeanImage initializer.");
        return mean.FloatData.Count > 0
            ? [.. mean.FloatData]
            : System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(mean.RawData.Span).ToArray();
    }
}
