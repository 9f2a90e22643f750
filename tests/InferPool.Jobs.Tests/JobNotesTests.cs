using InferPool.Jobs;

namespace InferPool.Jobs.Tests;

/// <summary>The summary's notes about GPU caps: one line per cap, not one per replica it left out.</summary>
public sealed class JobNotesTests
{
    private const string Reason = "cuda:0: capped at 3 of 8 planned replicas: the first replica took 8886 MiB (with what the replicas share) and the second 8890 MiB, the cost of each more.";

    [Fact]
    public void CappedNotes_OneCapOverSeveralReplicas_IsOneNoteNamingThemInOrder()
    {
        // As the first real GPU run raised them: in the order the replicas gave up, the same reason five times.
        var events = new[] { "cuda:0#6", "cuda:0#5", "cuda:0#4", "cuda:0#3", "cuda:0#7" }.Select(s => (s, $"Replica {s} is not started: {Reason}")).ToList();

        var note = Assert.Single(InferenceJob.CappedNotes(events));

        Assert.Equal($"Replicas cuda:0#3, cuda:0#4, cuda:0#5, cuda:0#6, cuda:0#7 are not started: {Reason}", note);
    }

    [Fact]
    public void CappedNotes_TwoGpusOrOneReplica_KeepTheirOwnReasons()
    {
        var other = Reason.Replace("cuda:0", "cuda:1", StringComparison.Ordinal);
        var events = new List<(string, string)>
        {
            ("cuda:0#7", $"Replica cuda:0#7 is not started: {Reason}"),
            ("cuda:1#2", $"Replica cuda:1#2 is not started: {other}"),
            ("cuda:1#3", $"Replica cuda:1#3 is not started: {other}"),
        };

        Assert.Equal(
            [$"Replica cuda:0#7 is not started: {Reason}", $"Replicas cuda:1#2, cuda:1#3 are not started: {other}"],
            InferenceJob.CappedNotes(events));
    }
}
