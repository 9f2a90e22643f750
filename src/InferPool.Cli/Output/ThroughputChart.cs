using System.Globalization;

namespace InferPool.Cli.Output;

/// <summary>A bar chart of throughput per configuration (ScottPlot), for <c>inferpool bench --chart</c>.</summary>
internal static class ThroughputChart
{
    /// <summary>Fonts tried in order; the bundled Skia has no font lookup of its own, so text needs a font file.</summary>
    private static readonly string[] FontFiles =
    [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];

    /// <summary>Draws one bar per configuration, labelled with its items/s, and saves a PNG.</summary>
    /// <returns>Null, or why the chart has no text (no font file found).</returns>
    public static string? Save(string path, string title, IReadOnlyList<(string Name, double ItemsPerSecond)> bars)
    {
        var font = FontFiles.FirstOrDefault(File.Exists);
        var plot = new ScottPlot.Plot();
        if (font is not null)
        {
            ScottPlot.Fonts.AddFontFile("InferPool Sans", font);
            plot.Font.Set("InferPool Sans");
        }

        var values = bars.Select(b => b.ItemsPerSecond).ToArray();
        var barPlot = plot.Add.Bars(values);
        for (var i = 0; i < barPlot.Bars.Count; i++)
        {
            barPlot.Bars[i].Label = values[i].ToString("F1", CultureInfo.InvariantCulture);
        }

        barPlot.ValueLabelStyle.FontSize = 14;
        plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, bars.Count).Select(i => (double)i)], [.. bars.Select(b => b.Name)]);
        plot.Axes.Margins(bottom: 0);
        plot.Title(title);
        plot.YLabel("items/s");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        plot.SavePng(path, 800, 450);
        return font is null ? $"no font file found ({string.Join(", ", FontFiles)}): the chart has bars but no text; install fonts-dejavu-core" : null;
    }
}
