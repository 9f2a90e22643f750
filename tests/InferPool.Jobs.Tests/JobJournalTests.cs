using System.Text.Json.Nodes;
using InferPool.Jobs.Parts;

namespace InferPool.Jobs.Tests;

/// <summary>The journal's parts are written as runs of consecutive parts of one size, and read back part by part; journals that list each part still read.</summary>
public sealed class JobJournalTests : TempFolderTest
{
    private static readonly JobIdentity Identity = new("m", "sha", "/in", "parquet", ["y"]);

    [Fact]
    public async Task Parts_RoundTripThroughRuns_AndTenThousandEqualPartsTakeOneEntry()
    {
        List<CommittedPart> parts =
        [
            .. Enumerable.Range(0, 3).Select(i => new CommittedPart($"part-{i:D5}.parquet", 1000)),
            new("part-00003.parquet", 500), // the end of a first run
            .. Enumerable.Range(4, 2).Select(i => new CommittedPart($"part-{i:D5}.parquet", 1000)), // a resumed run
            new("part-00006.parquet", 7),
        ];
        await new JobJournal { Job = Identity, Parts = parts, Finished = true }.SaveAsync(Dir);

        var loaded = JobJournal.Load(Dir)!;
        Assert.Equal(parts, loaded.Parts);
        Assert.Equal(4, JsonNode.Parse(await File.ReadAllTextAsync(JobJournal.PathIn(Dir)))!["parts"]!.AsArray().Count);

        var many = Enumerable.Range(0, 10_000).Select(i => new CommittedPart($"part-{i:D5}.jsonl", 1000)).ToList();
        await new JobJournal { Job = Identity, Parts = many }.SaveAsync(Dir);
        Assert.InRange(new FileInfo(JobJournal.PathIn(Dir)).Length, 1, 1024);
        Assert.Equal(many, JobJournal.Load(Dir)!.Parts);
        Assert.Equal(10_000_000, JobJournal.Load(Dir)!.CommittedRows);
    }

    [Fact]
    public void A_version_1_journal_listing_each_part_reads_the_same()
    {
        Write(JobJournal.FileName, """
            {"version": 1, "job": {"model": "m", "model_sha256": "sha", "input": "/in", "format": "parquet", "columns": ["y"]},
             "parts": [{"name": "part-00000.parquet", "rows": 3}, {"name": "part-00001.parquet", "rows": 3}, {"name": "part-00002.parquet", "rows": 1}],
             "finished": false}
            """);

        var journal = JobJournal.Load(Dir)!;

        Assert.Equal([new("part-00000.parquet", 3), new("part-00001.parquet", 3), new CommittedPart("part-00002.parquet", 1)], journal.Parts);
        Assert.Equal(2, journal.Version);
    }

    [Fact]
    public void A_run_that_does_not_start_at_a_numbered_part_is_a_damaged_journal()
    {
        Write(JobJournal.FileName, """{"job": {"model": "m", "model_sha256": "sha", "input": "/in", "format": "parquet", "columns": []}, "parts": [{"name": "odd.parquet", "rows": 3, "count": 2}]}""");

        var ex = Assert.Throws<JobFolderException>(() => JobJournal.Load(Dir));
        Assert.Equal(JobFolderProblem.DamagedJournal, ex.Problem);
    }
}
