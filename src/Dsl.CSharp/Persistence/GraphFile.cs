using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Duality.Ir;

namespace Duality.Persistence;

/// <summary>
/// One file per graph, in the safetensors layout (readable by any safetensors reader). Version 2:
///   8 bytes     little-endian length n of the header (2 to 100 000 000)
///   n bytes     JSON header, UTF-8: one entry per tensor, {"dtype": "F64", "shape": [...], "data_offsets": [b, e]},
///               the byte ranges following one another in header order from 0; and "__metadata__", whose
///               string values are exactly
///                 "format"   "duality-graph"
///                 "version"  "2" (a positive integer; version 1 files still load)
///                 "graph"    the graph as JSON: each node its record's kind and primary-constructor fields,
///                            sources by node name, weights by tensor name (see <see cref="GraphJson"/>)
///                 "sha256"   64 upper-case hex digits: SHA-256 of the whole file read with these 64 digits
///                            as ASCII '0' (the length, every header byte and the data; see <see cref="Checksum"/>)
///   rest        the tensors' float64 values, little-endian, exactly the bytes the table describes
/// Tensors are named "node-path.field" ("block1/proj.weights.weight"). Loading checks the layout before
/// it allocates (the declared header length against the file's size), the checksum before it trusts the
/// header's contents, and every field's type; whatever is wrong is a <see cref="GraphFileException"/>
/// saying so. Saving writes a temporary file beside the target (a symbolic link's final target) and moves
/// it into place, so an interrupted save never damages the previous file.
/// Version 1 hashed only the data and named fields by hand; it is read by renaming its fields
/// (<see cref="GraphJsonV1"/>), and a graph loaded from it saves as version 2.
/// </summary>
public static class GraphFile
{
    /// The value of "format" in a graph file's metadata.
    public const string Format = "duality-graph";
    /// The version this library writes; it reads versions 1 and 2.
    public const int Version = 2;

    /// <summary>The largest header a file may declare (as safetensors readers allow).</summary>
    public const int MaxHeaderBytes = 100_000_000;

    private const string Damaged = "the file is damaged or not a graph file; use a backup or save the graph again";
    private const string Truncated = "the file is truncated; use a backup or save the graph again";

    /// Writes <paramref name="graph"/>, weights included, to <paramref name="path"/> in the layout above, replacing
    /// any file there only once the new one is complete.
    /// <exception cref="ArgumentNullException"><paramref name="graph"/> or <paramref name="path"/> is null.</exception>
    /// <exception cref="GraphFileException">The file cannot be written (folder missing, no permission, header too large).</exception>
    public static void Save(Graph graph, string path)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(path);
        var writing = new GraphWriting(graph, path);
        var graphJson = GraphJson.Write(graph, writing);
        var header = new JsonObject();
        var data = TensorTable.Write(writing.Tensors, header, path);
        header["__metadata__"] = new JsonObject
        {
            ["format"] = Format,
            ["version"] = Version.ToString(),
            ["graph"] = graphJson.ToJsonString(),
            ["sha256"] = Checksum.Placeholder,
        };
        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        if (headerBytes.Length > MaxHeaderBytes)
            throw GraphFileException.CannotWrite(path, $"the header takes {headerBytes.Length} bytes, more than a graph file holds ({MaxHeaderBytes})",
                "save a smaller graph");
        var lengthPrefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(lengthPrefix, (ulong)headerBytes.Length);
        var digitsAt = Checksum.Locate(headerBytes) ?? throw new GraphFileBugException("the header written has no place for its checksum");
        Encoding.ASCII.GetBytes(Checksum.Compute(lengthPrefix, headerBytes, digitsAt, data), headerBytes.AsSpan(digitsAt));
        FileWriting.ReplaceAtomically(path, lengthPrefix, headerBytes, data);
    }

    /// Reads the graph saved at <paramref name="path"/> (version 1 or 2), checking layout, checksum and every field.
    /// <exception cref="ArgumentNullException"><paramref name="path"/> is null.</exception>
    /// <exception cref="GraphFileException">The file is missing, unreadable, truncated, damaged or not a graph file; the
    /// message names the problem and a fix.</exception>
    /// <exception cref="GraphException">The file is intact but the graph it holds does not verify.</exception>
    public static Graph Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            return Read(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GraphFileException(path, $"the file cannot be opened or read: {e.Message}", "check the path and the file's permissions", e);
        }
        catch (Exception e) when (e is not (GraphFileException or GraphFileBugException or OutOfMemoryException))
        {
            // every check below has its own message; this is the net for a header no check foresaw
            throw new GraphFileException(path, $"the header is malformed ({e.GetType().Name}: {e.Message})", Damaged, e);
        }
    }

    private static Graph Read(string path)
    {
        GraphFileException Refused(string problem, string hint = Damaged, Exception? inner = null) => new(path, problem, hint, inner);
        if (Directory.Exists(path)) throw Refused("it is a folder, not a file", "give the path of a file saved with GraphFile.Save");
        if (!File.Exists(path)) throw Refused("the file does not exist", "check the path");
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        // devices and pipes report no length (and /dev/zero never ends): then only the bounds below limit reading
        long? size = stream.CanSeek && stream.Length > 0 ? stream.Length : null;

        var lengthPrefix = ReadUpTo(stream, 8);
        if (lengthPrefix.Length < 8) throw Refused($"the file has {lengthPrefix.Length} bytes, too few for the 8-byte header length", Truncated);
        var declared = BinaryPrimitives.ReadUInt64LittleEndian(lengthPrefix);
        if (declared < 2 || declared > MaxHeaderBytes)
            throw Refused($"the header length is {declared} bytes; a graph file's header takes 2 to {MaxHeaderBytes}");
        if (size is { } known && declared > (ulong)(known - 8))
            throw Refused($"the header claims {declared} bytes but the file has {known - 8} after the length", Truncated);
        var headerBytes = ReadUpTo(stream, (int)declared);
        if (headerBytes.Length < (int)declared)
            throw Refused($"the header claims {declared} bytes but the file ends after {headerBytes.Length}", Truncated);

        if (!System.Text.Unicode.Utf8.IsValid(headerBytes)) throw Refused("the header is not valid UTF-8");
        var header = ParseObject(headerBytes, "the header", path);
        if (!header.TryGetPropertyValue("__metadata__", out var metadataJson))
            throw Refused("the header has no __metadata__", "this is a safetensors file but not a graph file; save the graph with GraphFile.Save");
        if (metadataJson is not JsonObject metadataObject) throw Refused($"__metadata__ is {FieldCodec.Show(metadataJson)}, not a JSON object");
        var metadata = new Dictionary<string, string>();
        foreach (var (key, value) in metadataObject)
            metadata[key] = value is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>()
                : throw Refused($"__metadata__ \"{key}\" is {FieldCodec.Show(value)}, not a string");
        if (metadata.GetValueOrDefault("format") != Format)
            throw Refused($"the format is {FieldCodec.Show(metadataObject["format"])}, not \"{Format}\"", "save the graph with GraphFile.Save");
        var version = FileVersion(metadata.GetValueOrDefault("version"), path);
        foreach (var key in metadata.Keys.Where(k => k is not ("format" or "version" or "graph" or "sha256")))
            throw Refused($"__metadata__ has an unknown key \"{key}\" (expected format, version, graph, sha256)");
        if (!metadata.TryGetValue("graph", out var graphText)) throw Refused("__metadata__ has no \"graph\"");
        if (!metadata.TryGetValue("sha256", out var expectedHash)) throw Refused("__metadata__ has no \"sha256\"");

        var entries = TensorTable.Read(header, path);
        var dataLength = entries.Count == 0 ? 0 : entries[^1].End;
        if (size is { } fileSize && fileSize - 8 - (long)declared is var rest && rest != dataLength)
            throw rest < dataLength
                ? Refused($"the tensors take {dataLength} bytes but the file holds {rest} after the header", Truncated)
                : Refused($"the file has {rest - dataLength} bytes after its tensors", "the file was appended to or damaged; use a backup or save the graph again");
        var data = ReadUpTo(stream, (int)dataLength);
        if (data.Length < dataLength) throw Refused($"the tensors take {dataLength} bytes but the file ends after {data.Length}", Truncated);
        if (stream.ReadByte() != -1) throw Refused("the file goes on after its tensors", "the file was appended to or damaged, or is not a file");

        var actualHash = version == 1
            ? Convert.ToHexString(SHA256.HashData(data))
            : Checksum.Compute(lengthPrefix, headerBytes, Checksum.Locate(headerBytes)
                ?? throw Refused($"the checksum {FieldCodec.Show(metadataObject["sha256"])} is not {Checksum.Digits} hex digits written plainly"), data);
        if (expectedHash != actualHash)
            throw Refused(version == 1 ? "the tensor bytes do not match the file's SHA-256 checksum"
                : "the file's bytes do not match its SHA-256 checksum (which covers the header and the tensors)",
                "the file was damaged or edited after it was saved; use a backup or save the graph again");

        var reading = new GraphReading(path, TensorTable.Decode(entries, data));
        var graph = ParseObject(Encoding.UTF8.GetBytes(graphText), "the graph description", path);
        return GraphJson.Read(version == 1 ? GraphJsonV1.Upgrade(graph, reading) : graph, reading);
    }

    /// <summary>A positive integer up to <see cref="Version"/>; anything else is refused, a newer version with a hint to upgrade.</summary>
    private static int FileVersion(string? text, string path)
    {
        if (text is null) throw new GraphFileException(path, "__metadata__ has no \"version\"", Damaged);
        if (text.Length == 0 || text[0] == '0' || !text.All(char.IsAsciiDigit))
            throw new GraphFileException(path, $"the file version {FieldCodec.Show(JsonValue.Create(text))} is not a positive integer", Damaged);
        if (!int.TryParse(text, out var version) || version > Version)
        {
            var shown = text.Length <= 20 ? text : text[..17] + "...";
            throw new GraphFileException(path,
                $"written by a newer version of Duality (file version {shown}, this library reads up to {Version}): upgrade Duality to read it",
                "upgrade the Duality package, or save the graph again with this version");
        }
        return version;
    }

    private static JsonObject ParseObject(byte[] utf8, string what, string path)
    {
        try
        {
            return JsonNode.Parse(utf8, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false, MaxDepth = 64 }) as JsonObject
                ?? throw new GraphFileException(path, $"{what} is not a JSON object", Damaged);
        }
        catch (JsonException e)
        {
            throw new GraphFileException(path, $"{what} is not valid JSON: {e.Message}", Damaged, e);
        }
    }

    /// <summary>Up to <paramref name="count"/> bytes, fewer at the end of the stream; memory grows with what is read, not with what is claimed.</summary>
    private static byte[] ReadUpTo(Stream stream, int count)
    {
        var buffer = new byte[Math.Min(count, 1 << 20)];
        var filled = 0;
        while (filled < count)
        {
            if (filled == buffer.Length) Array.Resize(ref buffer, (int)Math.Min(count, 2L * buffer.Length));
            var read = stream.Read(buffer, filled, buffer.Length - filled);
            if (read == 0) break;
            filled += read;
        }
        return filled == buffer.Length ? buffer : buffer[..filled];
    }
}
