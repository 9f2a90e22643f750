using InferPool.Jobs.Engines;
using InferPool.Jobs.Inputs;

namespace InferPool.Jobs.Tuning;

/// <summary>The first items of the user's input, prepared once, for measurements that should not depend on disk or decoding noise.</summary>
/// <param name="Items">The items that prepared cleanly.</param>
/// <param name="Tensors">Their model inputs, in the same order.</param>
/// <param name="Unusable">Items that could not be prepared and were skipped.</param>
public sealed record Sample(IReadOnlyList<InputItem> Items, IReadOnlyList<float[]> Tensors, int Unusable)
{
    /// <summary>Prepares up to <paramref name="count"/> usable items from the start of <paramref name="input"/> for an image model.</summary>
    /// <param name="input">The input.</param>
    /// <param name="inputs">The model's preparation.</param>
    /// <param name="count">How many usable items to take.</param>
    /// <param name="cancellationToken">Stops the preparation.</param>
    /// <exception cref="InvalidDataException">None of the first items could be prepared; the message gives the first reason.</exception>
    public static async Task<Sample> LoadAsync(InputSource input, OnnxInputs inputs, int count, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        var sample = await LoadAsync(input, inputs.Prepare, count, cancellationToken).ConfigureAwait(false);
        return new Sample(sample.Items, sample.Prepared, sample.Unusable);
    }

    /// <summary>Prepares up to <paramref name="count"/> usable items from the start of <paramref name="input"/>, any way.</summary>
    /// <typeparam name="T">What preparation makes of an item (an image tensor, a record's tensors, a tokenized text, the item itself).</typeparam>
    /// <param name="input">The input.</param>
    /// <param name="prepare">Prepares one item; throws <see cref="InvalidDataException"/> (or an I/O exception) for an unusable one.</param>
    /// <param name="count">How many usable items to take.</param>
    /// <param name="cancellationToken">Stops the preparation.</param>
    /// <exception cref="InvalidDataException">None of the first items could be prepared; the message gives the first reason.</exception>
    public static async Task<Sample<T>> LoadAsync<T>(InputSource input, Func<InputItem, T> prepare, int count, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(prepare);
        var items = new List<InputItem>(count);
        var prepared = new List<T>(count);
        var unusable = 0;
        string? firstReason = null;
        await foreach (var item in input.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            try
            {
                prepared.Add(prepare(item));
                items.Add(item);
            }
            catch (Exception ex) when (ex is InvalidDataException or IOException or UnauthorizedAccessException or NotSupportedException)
            {
                unusable++;
                firstReason ??= $"{item.Key}: {ex.Message}";
            }

            if (prepared.Count == count || unusable >= Math.Max(count, 100))
            {
                break;
            }
        }

        return prepared.Count > 0
            ? new Sample<T>(items, prepared, unusable)
            : throw new InvalidDataException($"No usable item in {input.Description} to measure with{(firstReason is null ? " (it is empty)" : $"; the first failed: {firstReason}")}.");
    }
}

/// <summary>The first usable items of an input with what preparation made of each.</summary>
/// <typeparam name="T">What preparation makes of an item.</typeparam>
/// <param name="Items">The items that prepared cleanly.</param>
/// <param name="Prepared">What each became, in the same order.</param>
/// <param name="Unusable">Items that could not be prepared and were skipped.</param>
public sealed record Sample<T>(IReadOnlyList<InputItem> Items, IReadOnlyList<T> Prepared, int Unusable);
