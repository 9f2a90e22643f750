using InferPool.Devices;

var inventory = NvmlDeviceInventory.Discover();
Console.WriteLine($"cpu cores: {inventory.CpuCores}");
foreach (var gpu in inventory.GpuDetails)
{
    Console.WriteLine($"{gpu.Device}: {gpu.Name}, {gpu.FreeMemoryBytes / (1024 * 1024)} MiB free of {gpu.TotalMemoryBytes / (1024 * 1024)} MiB");
}

Console.WriteLine(inventory.UnavailableReason is { } reason ? $"gpus: {reason}" : $"gpus: {inventory.Gpus.Count}");
foreach (var text in new[] { "auto", "cuda", "cuda:0=4,cpu" })
{
    try
    {
        Console.WriteLine($"--devices {text} -> {DeviceSpec.Parse(text).Resolve(inventory, defaultReplicas: 2)}");
    }
    catch (InvalidOperationException ex)
    {
        Console.WriteLine($"--devices {text} -> {ex.Message}");
    }
}
