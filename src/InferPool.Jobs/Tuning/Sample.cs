using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;

namespace InferPool.Jobs.Tuning;

/// <summary>The first items of the user's input, prepared once, for measurements that should not depend on disk or decoding noise.</summary>
/// <param name="Items">The items that prepared cleanly.</param>
/// <param name="Tensors">Their model inputs, in the same order.</param>
/// <param name="Unusable">Items that could not be prepared and were skipped.</param>
public sealed record Sample(IReadOnlyList<InputItem> Items, IReadOnlyList<float[]> Tensors, int Unusable)
{
    /// <summary>Prepares up to <paramref name="count"/> usable items from the start of <paramref name="input"/>.</summary>
    /// <param name="input">The input.</param>
    /// <param name="inputs">The model's preparation.</param>
    /// <param name="count">How many usable items to take.</param>
    /// <param name="cancellationToken">Stops the preparation.</param>
    /// <exception cref="InvalidDataException">None of the first items could be prepared; the message gives the first reason.</exception>
    public static async Task<Sample> LoadAsync(InputSource input, OnnxInputs inputs, int count, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(inputs);
        var items = new List<InputItem>(count);
        var tensors = new List<float[]>(count);
        var unusable = 0;
        string? firstReason = null;
        await foreach (var item in input.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            try
            {
                tensors.Add(inputs.Prepare(item));
                items.Add(item);
            }
            catch (Exception ex) when (ex is InvalidDataException or IOException or UnauthorizedAccessException or NotSupportedException)
            {
                unusable++;
                firstReason ??= $"{item.Key}: {ex.Message}";
            }

            if (tensors.Count == count || unusable >= Math.Max(count, 100))
            {
                break;
            }
        }

        return tensors.Count > 0
            ? new Sample(items, tensors, unusable)
            : throw new InvalidDataException($"No usable item in {input.Description} to measure with{(firstReason is null ? " (it is empty)" : $"; the first failed: {firstReason}")}.");
    }
}
