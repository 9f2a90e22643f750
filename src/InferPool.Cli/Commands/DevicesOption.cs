using InferPool.Devices;
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
}
