using InferPool.Jobs.Parts;
using InferPool.Onnx.Tensors;
using Parquet;
using Parquet.Serialization;

namespace InferPool.Jobs.Tests;

/// <summary>
/// A Parquet part is written as row groups of bounded size (so that the writer's buffers do not grow with the output's
/// width), and reads back as one table: every row, in order, with its values, whatever group it landed in.
/// </summary>
public sealed class ParquetPartTests : TempFolderTest
{
    private const int Width = 300;

    [Fact]
    public async Task Write_MoreValuesThanOneGroupHolds_SplitsIntoBoundedGroups_AndReadsBackWhole()
    {
        var random = new Random(5);
        var rows = new List<ResultRow>();
        for (var i = 0; i < 700; i++)
        {
            // A wide row (more values than a group's bound) and a failed one without outputs sit among ordinary rows.
            var width = i == 400 ? ParquetFormat.GroupValues + 1_000 : Width;
            var values = Enumerable.Range(0, width).Select(_ => random.NextSingle()).ToArray();
            rows.Add(i == 123
                ? new ResultRow { Key = $"k{i:D4}", Ok = false, Error = "bad input", Attempts = 1 }
                : new ResultRow { Key = $"k{i:D4}", Ok = true, Outputs = [TensorData.Create(values, width)], Device = "cpu", Replica = "cpu#0", Attempts = 1 });
        }

        var path = Path.Combine(Dir, "part.parquet");
        await using (var stream = File.Create(path))
        {
            await OutputFormat.Parse("parquet").WriteAsync(stream, rows, [new OutputColumn("y")], CancellationToken.None);
        }

        // Groups: each holds at most the bound in its list column, except the wide row, which is a group of its own.
        var groups = ParquetFormat.RowGroups(rows, 1).ToArray();
        Assert.Equal(rows.Count, groups.Sum(g => g.Count));
        Assert.Equal(Enumerable.Range(0, groups.Length - 1).Select(g => groups[g].Start + groups[g].Count), groups.Skip(1).Select(g => g.Start));
        Assert.All(groups, g => Assert.True(
            g.Count == 1 || rows.Skip(g.Start).Take(g.Count).Sum(r => r.Outputs?[0].Length ?? 0) <= ParquetFormat.GroupValues,
            $"group at row {g.Start} of {g.Count} rows is over the bound"));
        Assert.Contains((400, 1), groups);
        await using (var file = File.OpenRead(path))
        {
            await using var reader = await ParquetReader.CreateAsync(file, cancellationToken: CancellationToken.None);
            Assert.Equal(groups.Length, reader.RowGroupCount);
            Assert.True(reader.RowGroupCount >= 4, $"{reader.RowGroupCount} groups");
        }

        // The table: every row in order, values intact, the failed row with an empty list.
        await using (var file = File.OpenRead(path))
        {
            var table = await ParquetSerializer.DeserializeUntypedAsync(file, cancellationToken: CancellationToken.None);
            Assert.Equal(rows.Select(r => r.Key), table.Data.Select(r => (string)r["key"]!));
            for (var i = 0; i < rows.Count; i++)
            {
                var read = ((IEnumerable<float>)table.Data[i]["y"]!).ToArray();
                Assert.Equal(rows[i].Outputs?[0].ToFloats() ?? [], read);
                Assert.Equal(rows[i].Status, table.Data[i]["status"]);
            }
        }

        // What resuming reads: every key and whether it succeeded, across the groups.
        var keys = new List<(string Key, bool Ok)>();
        await foreach (var key in OutputFormat.Parse("parquet").ReadKeysAsync(path, CancellationToken.None))
        {
            keys.Add(key);
        }

        Assert.Equal(rows.Select(r => (r.Key, r.Ok)), keys);
    }

    [Fact]
    public void RowGroups_NoRows_IsOneEmptyGroup()
    {
        Assert.Equal([(0, 0)], ParquetFormat.RowGroups([], 1));
    }
}
