namespace InferPool.Onnx;

/// <summary>Reads this process's resident memory, to tell what each replica costs.</summary>
internal static class ProcessMemory
{
    public static long ResidentBytes()
    {
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        process.Refresh();
        return process.WorkingSet64;
    }
}
