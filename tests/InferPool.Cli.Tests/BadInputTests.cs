using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using System.Text.Json;

namespace InferPool.Cli.Tests;

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BadInputTests : TempFolderTest
{
    [Fact]
    public async Task Run_EveryKindOfBadInput_FailsItsOwnRowWithAPreciseReasonAndTheJobGoesOn()
    {
        var good = File.ReadAllBytes(Path.Combine(Cli.SampleImages, "coffee.png"));
        Write("in/good.png", good);
        Write("in/empty.jpg", []);
        Write("in/notes.jpg", "plain text, not a JPEG");
        var jpeg = File.ReadAllBytes(Path.Combine(Cli.SampleImages, "rocket.jpg"));
        Write("in/truncated.jpg", jpeg[..(jpeg.Length / 3)]);
        Write("in/bad-crc.png", WithCorruptedImageData(good));
        Write("in/bomb.png", PngHeaderOnly(100_000, 100_000));
        var secret = Write("in/secret.png", good);
        File.SetUnixFileMode(secret, UnixFileMode.None);

        // Records: the files above, one that does not exist (deleted after listing), a line that is not JSON,
        // a line that is not UTF-8, and a record with nothing to read.
        var lines = new List<byte[]>();
        foreach (var name in new[] { "good.png", "empty.jpg", "notes.jpg", "truncated.jpg", "bad-crc.png", "bomb.png", "secret.png", "deleted.png" })
        {
            lines.Add(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { key = name, path = "in/" + name })));
        }

        lines.Add("{\"key\": \"broken\", \"path\": "u8.ToArray());
        lines.Add([.. "{\"key\": \"latin1-"u8, 0xE9, .. "\", \"path\": \"in/good.png\"}"u8]);
        lines.Add("{\"key\": \"nothing\"}"u8.ToArray());
        Write("inputs.jsonl", [.. lines.SelectMany(l => l.Concat("\n"u8.ToArray()))]);

        // Root reads any file; without the DAC capabilities it meets the permission bits like anyone else.
        string[] wrapper = Environment.UserName == "root" ? ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] : [];
        var (code, stdout, stderr) = await Cli.RunAsync(Dir, wrapper, "run", "inputs.jsonl", "-o", "out", "--format", "jsonl", "--max-pixels", "50000000");

        Assert.True(code == 1, stderr + stdout);
        var rows = File.ReadLines(Path.Combine(Dir, "out", "part-00000.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement)
            .ToDictionary(r => r.GetProperty("key").GetString()!, r => (Status: r.GetProperty("status").GetString(), Error: r.GetProperty("error").GetString()));
        Assert.Equal(11, rows.Count);
        Assert.Equal(("ok", null), rows["good.png"]);
        Expect(rows, "empty.jpg", "InvalidDataException: The file is empty (0 bytes).");
        Expect(rows, "notes.jpg", "InvalidDataException: Not a decodable image");
        Expect(rows, "truncated.jpg", "InvalidDataException: The image data could not be decoded (the file is truncated)");
        Expect(rows, "bad-crc.png", "InvalidDataException: The image data could not be decoded");
        Expect(rows, "bomb.png", "The image is 100000x100000 = 10,000,000,000 pixels, over the limit of 50,000,000; it is refused before decoding.");
        Expect(rows, "secret.png", "UnauthorizedAccessException: Access to the path");
        Expect(rows, "deleted.png", "FileNotFoundException: Could not find file");
        Expect(rows, "line 9", "is not valid JSON");
        Expect(rows, "line 10", "is not valid UTF-8");
        Expect(rows, "nothing", "has neither a \"path\" nor an \"input\" or \"inputs\" field");
        Assert.Contains("Failures by reason: InvalidDataException × 8", stdout, StringComparison.Ordinal);
    }

    private static void Expect(Dictionary<string, (string? Status, string? Error)> rows, string key, string reason)
    {
        Assert.Equal("failed", rows[key].Status);
        Assert.Contains(reason, rows[key].Error, StringComparison.Ordinal);
    }

    /// <summary>The PNG with one byte of its first IDAT chunk's data flipped, so the chunk's CRC no longer matches.</summary>
    private static byte[] WithCorruptedImageData(byte[] png)
    {
        var copy = png.ToArray();
        var at = 8;
        while (Encoding.ASCII.GetString(copy, at + 4, 4) != "IDAT")
        {
            at += 12 + BinaryPrimitives.ReadInt32BigEndian(copy.AsSpan(at));
        }

        copy[at + 8 + 20] ^= 0xFF;
        return copy;
    }

    /// <summary>A PNG whose header claims the given size, with a few bytes of image data: a decompression bomb's header.</summary>
    private static byte[] PngHeaderOnly(int width, int height)
    {
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8; // bit depth
        ihdr[9] = 2; // RGB
        return [0x89, .. "PNG\r\n\u001a\n"u8, .. Chunk("IHDR", ihdr), .. Chunk("IDAT", [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]), .. Chunk("IEND", [])];
    }

    private static byte[] Chunk(string type, byte[] data)
    {
        var typeBytes = Encoding.ASCII.GetBytes(type);
        var chunk = new byte[12 + data.Length];
        BinaryPrimitives.WriteInt32BigEndian(chunk, data.Length);
        typeBytes.CopyTo(chunk, 4);
        data.CopyTo(chunk, 8);
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(8 + data.Length), Crc32.HashToUInt32([.. typeBytes, .. data]));
        return chunk;
    }
}
