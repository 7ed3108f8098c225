using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Duality.Ir;

namespace Duality.Persistence;

/// <summary>
/// One file per graph, in the safetensors layout (readable by any safetensors reader):
///   8 bytes     little-endian length n of the header
///   n bytes     JSON header: each tensor's dtype (F64), shape and byte range, and "__metadata__" with
///               format "duality-graph", version "1", the graph as JSON (weights replaced by tensor
///               names) and the SHA-256 of the tensor bytes
///   rest        the tensors' float64 values, little-endian, in header order
/// Tensors are named "node-path.field" (for example "block1/proj.weight"). Saving writes a temporary
/// file beside the target and moves it into place, so an interrupted save never damages the
/// previous file; a symbolic link is followed and stays a link, and a failure is a GraphFileException
/// ("cannot write ..."). Loading checks every part and says what is wrong.
/// </summary>
public static class GraphFile
{
    public const string Format = "duality-graph";
    public const int Version = 1;

    public static void Save(Graph graph, string path)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var tensors = new List<(string Name, DoubleTensor Value)>();
        var nodes = new JsonArray(graph.Nodes.Select(n => (JsonNode)GraphJson.Write(n, graph, tensors)).ToArray());
        var graphJson = new JsonObject
        {
            ["nodes"] = nodes,
            ["outputs"] = new JsonArray(graph.Outputs.Select(o => (JsonNode)JsonValue.Create(graph[o].Name)).ToArray()),
        };
        var data = new byte[tensors.Sum(t => (long)t.Value.Data.Count * 8)];
        var header = new JsonObject();
        long offset = 0;
        foreach (var (name, value) in tensors)
        {
            foreach (var x in value.Data)
            {
                BinaryPrimitives.WriteDoubleLittleEndian(data.AsSpan((int)offset), x);
                offset += 8;
            }
            header[name] = new JsonObject
            {
                ["dtype"] = "F64",
                ["shape"] = new JsonArray(value.Shape.Select(d => (JsonNode)JsonValue.Create(d)).ToArray()),
                ["data_offsets"] = new JsonArray(offset - value.Data.Count * 8L, offset),
            };
        }
        header["__metadata__"] = new JsonObject
        {
            ["format"] = Format,
            ["version"] = Version.ToString(),
            ["graph"] = graphJson.ToJsonString(),
            ["sha256"] = Convert.ToHexString(SHA256.HashData(data)),
        };
        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        var lengthPrefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(lengthPrefix, (ulong)headerBytes.Length);
        FileWriting.ReplaceAtomically(path, lengthPrefix, headerBytes, data);
    }

    public static Graph Load(string path)
    {
        if (!File.Exists(path)) throw new GraphFileException(path, "the file does not exist", "check the path");
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 8) throw new GraphFileException(path, $"the file has {bytes.Length} bytes, too few for a header", "the file is truncated; save the graph again");
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (headerLength > (ulong)bytes.Length - 8)
            throw new GraphFileException(path, $"the header claims {headerLength} bytes but the file has {bytes.Length - 8} after the length",
                "the file is truncated or not a graph file");
        JsonObject header;
        try
        {
            header = JsonNode.Parse(bytes.AsSpan(8, (int)headerLength))?.AsObject() ?? throw new JsonException("empty header");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException)
        {
            throw new GraphFileException(path, "the header is not valid JSON", "the file is damaged or not a graph file", e);
        }
        var metadata = header["__metadata__"] as JsonObject
            ?? throw new GraphFileException(path, "the header has no __metadata__", "this is a safetensors file but not a graph file; save it with GraphFile.Save");
        if ((string?)metadata["format"] != Format)
            throw new GraphFileException(path, $"the format is '{metadata["format"]}', not '{Format}'", "save the graph with GraphFile.Save");
        if (!int.TryParse((string?)metadata["version"], out var version) || version > Version)
            throw new GraphFileException(path, $"format version {metadata["version"]} is newer than this library's ({Version})", "update the library to read it");
        var data = bytes.AsSpan(8 + (int)headerLength);
        if ((string?)metadata["sha256"] is not { } expected || expected != Convert.ToHexString(SHA256.HashData(data)))
            throw new GraphFileException(path, "the tensor bytes do not match the checksum in the header", "the file is damaged or truncated; use a backup or save again");
        var tensors = new Dictionary<string, DoubleTensor>();
        foreach (var (name, entry) in header)
        {
            if (name == "__metadata__") continue;
            tensors[name] = ReadTensor(path, name, entry as JsonObject, data);
        }
        JsonObject graph;
        try
        {
            graph = JsonNode.Parse((string?)metadata["graph"] ?? "")!.AsObject();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException)
        {
            throw new GraphFileException(path, "the graph description is not valid JSON", "the file is damaged", e);
        }
        return GraphJson.Read(path, graph, tensors);
    }

    private static DoubleTensor ReadTensor(string path, string name, JsonObject? entry, ReadOnlySpan<byte> data)
    {
        if (entry is null || (string?)entry["dtype"] != "F64" || entry["shape"] is not JsonArray shape || entry["data_offsets"] is not JsonArray offsets)
            throw new GraphFileException(path, $"tensor '{name}' is not described as F64 with a shape and data offsets", "the file is damaged");
        var dims = shape.Select(d => (int)d!).ToArray();
        long begin = (long)offsets[0]!, end = (long)offsets[1]!;
        var count = dims.Aggregate(1L, (a, d) => a * d);
        if (begin < 0 || end > data.Length || end - begin != count * 8)
            throw new GraphFileException(path, $"tensor '{name}' of shape [{string.Join(", ", dims)}] lies at bytes [{begin}, {end}) of {data.Length}",
                "the file is truncated or damaged");
        var values = new double[count];
        for (int i = 0; i < count; i++) values[i] = BinaryPrimitives.ReadDoubleLittleEndian(data.Slice((int)(begin + 8L * i), 8));
        return DoubleTensor.FromShape(dims, values);
    }
}
