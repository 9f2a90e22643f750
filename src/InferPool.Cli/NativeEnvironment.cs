using System.Runtime.InteropServices;

namespace InferPool.Cli;

/// <summary>
/// Sets environment variables where native code reads them. On Unix, <see cref="Environment.SetEnvironmentVariable(string, string)"/>
/// changes only .NET's copy of the environment; CUDA and ONNX Runtime read the process's own with <c>getenv</c>.
/// </summary>
internal static partial class NativeEnvironment
{
    /// <summary>Sets <paramref name="name"/> for .NET, child processes and native code, unless it is already set.</summary>
    public static void SetDefault(string name, string value)
    {
        if (Environment.GetEnvironmentVariable(name) is not null)
        {
            return;
        }

        Environment.SetEnvironmentVariable(name, value);
        if (!OperatingSystem.IsWindows())
        {
            _ = SetEnv(name, value, overwrite: 0);
        }
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
