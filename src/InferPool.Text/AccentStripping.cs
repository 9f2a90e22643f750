using System.Globalization;

namespace InferPool.Text;

/// <summary>
/// Lower-casing and accent stripping as BERT's uncased tokenizer does it (lower-case, Unicode NFD, nonspacing marks
/// removed), from a table built into this assembly instead of the operating system's Unicode library, so that it gives
/// the same ids with and without ICU (.NET's invariant globalization mode cannot decompose "é").
/// </summary>
internal static class AccentStripping
{
    private const int HangulFirst = 0xAC00;
    private const int HangulLast = 0xD7A3;

    private static readonly string?[] Table = Load();

    /// <summary>The text lower-cased with accents stripped; the same instance when nothing changes.</summary>
    public static string Apply(string text)
    {
        var lower = text.ToLowerInvariant();
        var i = 0;
        while (i < lower.Length && (lower[i] < 0x80 || (Table[lower[i]] is null && !IsHangul(lower[i]))))
        {
            i++;
        }

        if (i == lower.Length)
        {
            return lower;
        }

        var builder = new System.Text.StringBuilder(lower.Length + 8);
        builder.Append(lower, 0, i);
        for (; i < lower.Length; i++)
        {
            var c = lower[i];
            if (IsHangul(c))
            {
                // Hangul syllables decompose by rule into leading consonant, vowel and (optional) trailing consonant.
                var s = c - HangulFirst;
                builder.Append((char)(0x1100 + (s / 588))).Append((char)(0x1161 + (s % 588 / 28)));
                if (s % 28 != 0)
                {
                    builder.Append((char)(0x11A7 + (s % 28)));
                }
            }
            else if (Table[c] is { } replacement)
            {
                builder.Append(replacement);
            }
            else
            {
                builder.Append(c);
            }
        }

        return builder.ToString();
    }

    private static bool IsHangul(char c) => c is >= (char)HangulFirst and <= (char)HangulLast;

    private static string?[] Load()
    {
        var table = new string?[char.MaxValue + 1];
        using var stream = typeof(AccentStripping).Assembly.GetManifestResourceStream("InferPool.Text.AccentStripping.txt")
            ?? throw new InvalidOperationException("The accent-stripping table is missing from InferPool.Text.");
        using var reader = new StreamReader(stream);
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var from = int.Parse(fields[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            table[from] = string.Concat(fields.Skip(1).Select(f => (char)int.Parse(f, NumberStyles.HexNumber, CultureInfo.InvariantCulture)));
        }

        return table;
    }
}
