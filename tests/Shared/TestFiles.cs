using System.Text;

namespace InferPool.TestKit;

/// <summary>Files the test projects copy next to themselves: the sample images and, where imported, the built-in model.</summary>
internal static class TestFiles
{
    public static string Directory => AppContext.BaseDirectory;

    public static string SampleImages => Path.Combine(Directory, "samples", "images");

    public static string BuiltInModel => Path.Combine(Directory, "models", "resnet18", "ResNet18.onnx");
}

/// <summary>A temporary folder per test.</summary>
public abstract class TempFolderTest : IDisposable
{
    protected TempFolderTest() => Dir = System.IO.Directory.CreateTempSubdirectory("inferpool-test-").FullName;

    protected string Dir { get; }

    public void Dispose()
    {
        System.IO.Directory.Delete(Dir, recursive: true);
        GC.SuppressFinalize(this);
    }

    protected string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(Dir, name);
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    protected string Write(string name, string text) => Write(name, Encoding.UTF8.GetBytes(text));
}
