using System.Diagnostics;
using InferPool.Jobs.Parts;

namespace InferPool.Jobs.Tests;

/// <summary>
/// samples/ResumableJob, the ten lines a library user writes for what <c>inferpool run photos -o out</c> does, run as a
/// real process: killed with SIGKILL once parts are committed, then run again to the end. Every key is in the output
/// exactly once, and the second run skipped what the first committed.
/// </summary>
public sealed class ResumableJobSampleTests : TempFolderTest
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(4);
    private static readonly string Sample = Path.Combine(TestFiles.Directory, "sample-resumablejob", "ResumableJob.dll");

    [Fact]
    public async Task Sample_KilledAfterAPart_ResumesToEveryKeyExactlyOnce()
    {
        var images = CopySamples(copies: 12);
        var output = Path.Combine(Dir, "embeddings");

        using (var first = Start(output))
        {
            await PartFiles.WaitForCommittedPartsAsync(output, 1, first, Bound);
            first.Kill(); // SIGKILL: no chance to clean up
            await first.WaitForExitAsync().WaitAsync(Bound);
        }

        var committedBeforeKill = JobJournal.Load(output)!.CommittedRows;
        Assert.InRange(committedBeforeKill, 100, images.Count - 1);

        using var second = Start(output);
        var stdout = await second.StandardOutput.ReadToEndAsync().WaitAsync(Bound);
        await second.WaitForExitAsync().WaitAsync(Bound);
        Assert.True(second.ExitCode == 0, stdout + await second.StandardError.ReadToEndAsync());
        Assert.Contains($"{committedBeforeKill} already done", stdout, StringComparison.Ordinal);

        var keys = await PartFiles.ReadParquetKeysAsync(output);
        Assert.Equal(images.Order(StringComparer.Ordinal), keys.Order(StringComparer.Ordinal));
        Assert.True(JobJournal.Load(output)!.Finished);
    }

    private Process Start(string output)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Dir };
        foreach (var arg in new[] { Sample, Path.Combine(Dir, "photos"), output })
        {
            start.ArgumentList.Add(arg);
        }

        return Process.Start(start)!;
    }

    /// <summary>The 20 sample images in <paramref name="copies"/> sub-folders; returns the keys the job gives them.</summary>
    private List<string> CopySamples(int copies)
    {
        var keys = new List<string>();
        for (var copy = 0; copy < copies; copy++)
        {
            var folder = Path.Combine(Dir, "photos", $"set{copy:D2}");
            Directory.CreateDirectory(folder);
            foreach (var file in Directory.GetFiles(TestFiles.SampleImages).Where(f => !f.EndsWith(".md", StringComparison.Ordinal)))
            {
                File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
                keys.Add($"set{copy:D2}/{Path.GetFileName(file)}");
            }
        }

        return keys;
    }
}
