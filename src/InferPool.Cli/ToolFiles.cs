namespace InferPool.Cli;

/// <summary>Files shipped with the tool.</summary>
internal static class ToolFiles
{
    /// <summary>The sample images: the input of every command that is given none.</summary>
    public static string SampleImages => Path.Combine(AppContext.BaseDirectory, "samples", "images");

    /// <summary>The sample texts: the input of a text job that is given none.</summary>
    public static string SampleTexts => Path.Combine(AppContext.BaseDirectory, "samples", "texts", "sample.txt");
}
