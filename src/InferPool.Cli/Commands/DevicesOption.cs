using InferPool.Devices;
using InferPool.Jobs;
using Spectre.Console;

namespace InferPool.Cli.Commands;

/// <summary>The <c>--devices</c> option, checked the same way by every command that takes it.</summary>
internal static class DevicesOption
{
    /// <summary>Success, or the parser's reason prefixed with the option's name.</summary>
    public static ValidationResult Validate(string devices)
    {
        try
        {
            DeviceSpec.Parse(devices);
            return ValidationResult.Success();
        }
        catch (FormatException ex)
        {
            return ValidationResult.Error($"--devices: {ex.Message}");
        }
    }

    /// <summary>The replicas per device for <paramref name="devices"/> (<see cref="JobDefaults.Plan"/>), with the option named when the machine cannot give them.</summary>
    /// <exception cref="InvalidOperationException">The devices asked for are not on this machine.</exception>
    public static ReplicaPlan Plan(IDeviceInventory inventory, string devices, int? replicas = null, int? threads = null)
    {
        try
        {
            return JobDefaults.Plan(inventory, devices, replicas, threads);
        }
        catch (InvalidOperationException ex)
        {
            throw new InvalidOperationException($"--devices {devices}: {ex.Message}", ex);
        }
    }
}
