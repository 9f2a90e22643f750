using System.Globalization;
using InferPool.Devices;
using Microsoft.ML.OnnxRuntime;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary><c>inferpool devices</c>: the CPU cores and GPUs this machine offers, and the ONNX Runtime providers built in.</summary>
internal sealed class DevicesCommand(IAnsiConsole console) : Command
{
    public override int Execute(CommandContext context, CancellationToken cancellationToken)
    {
        var inventory = NvmlDeviceInventory.Discover();
        var table = new Table().AddColumns("device", "what", "memory");
        table.AddRow("cpu", Markup.Escape($"{inventory.CpuCores} cores"), Markup.Escape(Gib(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes) + " available"));
        foreach (var gpu in inventory.GpuDetails)
        {
            table.AddRow(gpu.Device.ToString(), Markup.Escape(gpu.Name), Markup.Escape($"{Gib(gpu.FreeMemoryBytes)} free of {Gib(gpu.TotalMemoryBytes)}"));
        }

        console.Write(table);
        if (inventory.UnavailableReason is { } reason)
        {
            console.WriteLine($"GPUs: {reason}; 'auto' uses the CPU.");
        }

        console.WriteLine($"ONNX Runtime providers in this build: {string.Join(", ", OrtEnv.Instance().GetAvailableProviders())}");
        return ExitCodes.Ok;
    }

    private static string Gib(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / (1024.0 * 1024 * 1024):F1} GiB");
}
