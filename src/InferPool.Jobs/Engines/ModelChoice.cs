using InferPool.Images;
using InferPool.Onnx;
using Onnx;

namespace InferPool.Jobs.Engines;

/// <summary>
/// The model a job uses and how to feed it images: the built-in ResNet-18 (<see cref="BuiltInName"/>) or any .onnx file.
/// </summary>
/// <param name="Name">What to call it in summaries.</param>
/// <param name="Path">The .onnx file.</param>
/// <param name="Normalization">How image pixels become input floats.</param>
/// <param name="ColumnNames">Output column name for each model output, by output name.</param>
public sealed record ModelChoice(string Name, string Path, PixelNormalization Normalization, IReadOnlyDictionary<string, string> ColumnNames)
{
    /// <summary>The built-in model's name.</summary>
    public const string BuiltInName = "resnet18";

    /// <summary>Where the built-in model sits: next to the program (<c>models/resnet18</c>), copied there from its NuGet package at build time.</summary>
    public static string BuiltInDirectory => System.IO.Path.Combine(AppContext.BaseDirectory, "models", "resnet18");

    /// <summary>Resolves <c>resnet18</c> or a path.</summary>
    /// <param name="nameOrPath"><see cref="BuiltInName"/> or the path of an .onnx file.</param>
    /// <exception cref="FileNotFoundException">The file (or the built-in model) is missing.</exception>
    public static ModelChoice Resolve(string nameOrPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(nameOrPath);
        if (string.Equals(nameOrPath, BuiltInName, StringComparison.OrdinalIgnoreCase))
        {
            var model = System.IO.Path.Combine(BuiltInDirectory, "ResNet18.onnx");
            var prep = System.IO.Path.Combine(BuiltInDirectory, "ResNetPreprocess.onnx");
            if (!File.Exists(model) || !File.Exists(prep))
            {
                throw new FileNotFoundException($"The built-in ResNet-18 is missing from {BuiltInDirectory}: it is copied there from the Microsoft.ML.DnnImageFeaturizer.ResNet18 package when the program is built.", model);
            }

            return new ModelChoice(
                BuiltInName,
                model,
                new PixelNormalization.BgrMeanImage(ReadMeanImage(prep)),
                new Dictionary<string, string>(StringComparer.Ordinal) { ["Pooling395_Output_0"] = "embedding" });
        }

        if (!File.Exists(nameOrPath))
        {
            throw new FileNotFoundException($"The model '{nameOrPath}' is neither '{BuiltInName}' nor an existing .onnx file.", nameOrPath);
        }

        return new ModelChoice(System.IO.Path.GetFileNameWithoutExtension(nameOrPath), System.IO.Path.GetFullPath(nameOrPath), new PixelNormalization.ImageNet(), new Dictionary<string, string>(StringComparer.Ordinal));
    }

    /// <summary>The output column for a model output: its mapped name, else the output's own name.</summary>
    /// <param name="outputName">The model output's name.</param>
    public string ColumnFor(string outputName) => ColumnNames.TryGetValue(outputName, out var column) ? column : outputName;

    /// <summary>True when an input is a square 3-channel image, [N,3,S,S] with S fixed.</summary>
    /// <param name="input">The model input.</param>
    public static bool IsImageInput(TensorSpec input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var shape = input.ItemShape;
        return input.ElementType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float && shape.Count == 3 && shape[0] == 3 && shape[1] == shape[2] && shape[1] > 0;
    }

    /// <summary>The image preparation that fits a model's input: a square crop of the input's size.</summary>
    /// <param name="model">The loaded model.</param>
    /// <param name="maxPixels">Images with more pixels are refused from their header.</param>
    /// <param name="tensors">Where prepared arrays come from, or null to allocate each.</param>
    /// <exception cref="NotSupportedException">The input is not a square 3-channel image.</exception>
    public ImagePreprocessor ImagePreparation(OnnxModel model, long maxPixels, TensorPool? tensors = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var shape = model.Inputs[0].ItemShape;
        if (model.Inputs.Count != 1 || !IsImageInput(model.Inputs[0]))
        {
            throw new NotSupportedException($"Model inputs {string.Join(", ", model.Inputs)} are not one square 3-channel image [N,3,S,S]; give it tensors (JSONL records with an \"inputs\" field) instead of image files.");
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
