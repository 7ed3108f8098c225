using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Nodes;
using Duality.Ir;

namespace Duality.Persistence;

/// <summary>One tensor of a file: its name, shape and byte range [Begin, End) in the data after the header.</summary>
internal sealed record TensorEntry(string Name, int[] Shape, long Begin, long End);

/// <summary>
/// The safetensors tensor table: header entries {"dtype": "F64", "shape": [...], "data_offsets": [begin, end]}
/// whose byte ranges follow one another in header order from 0, without gaps or overlaps, and cover the
/// data exactly; values are float64, little-endian, row-major.
/// </summary>
internal static class TensorTable
{
    public static byte[] Write(IReadOnlyList<(string Name, DoubleTensor Value)> tensors, JsonObject header, string path)
    {
        var total = tensors.Sum(t => (long)t.Value.Data.Count * 8);
        if (total > Array.MaxLength)
            throw GraphFileException.CannotWrite(path, $"the weights take {total} bytes, more than one file of this library holds ({Array.MaxLength})",
                "save a smaller graph, or its weights separately");
        var data = new byte[total];
        var offset = 0;
        foreach (var (name, value) in tensors)
        {
            var begin = offset;
            foreach (var x in value.Data)
            {
                BinaryPrimitives.WriteDoubleLittleEndian(data.AsSpan(offset), x);
                offset += 8;
            }
            header[name] = new JsonObject
            {
                ["dtype"] = "F64",
                ["shape"] = new JsonArray(value.Shape.Select(d => (JsonNode)JsonValue.Create(d)).ToArray()),
                ["data_offsets"] = new JsonArray(begin, offset),
            };
        }
        return data;
    }

    /// <summary>The entries of a header, checked; the data's length is the last entry's end (0 without tensors).</summary>
    public static IReadOnlyList<TensorEntry> Read(JsonObject header, string path)
    {
        var entries = new List<TensorEntry>();
        foreach (var (name, json) in header)
        {
            if (name == "__metadata__") continue;
            GraphFileException Bad(string problem) => new(path, $"tensor '{name}' {problem}", "the file is damaged or was written by another program");
            if (json is not JsonObject entry) throw Bad($"is described by {FieldCodec.Show(json)}, not a JSON object");
            foreach (var (key, _) in entry)
                if (key is not ("dtype" or "shape" or "data_offsets")) throw Bad($"has an unknown key '{key}'");
            if (entry["dtype"] is not JsonValue dtype || dtype.GetValueKind() != JsonValueKind.String)
                throw Bad($"has dtype {FieldCodec.Show(entry["dtype"])}, not a string");
            if (dtype.GetValue<string>() is var type && type != "F64")
                throw new GraphFileException(path, $"tensor '{name}' has dtype {type}; graph files hold float64 (F64) tensors only",
                    "convert the weights to float64 and save the graph with GraphFile.Save");
            var shape = Integers(entry["shape"], int.MaxValue) ?? throw Bad($"has shape {FieldCodec.Show(entry["shape"])}, not a list of non-negative integers");
            var offsets = Integers(entry["data_offsets"], long.MaxValue) is { Length: 2 } pair ? pair
                : throw Bad($"has data_offsets {FieldCodec.Show(entry["data_offsets"])}, not two non-negative integers [begin, end]");
            long begin = offsets[0], end = offsets[1], previous = entries.Count == 0 ? 0 : entries[^1].End;
            if (end < begin) throw Bad($"ends before it begins (data_offsets [{begin}, {end}])");
            if (begin < previous) throw Bad($"begins at byte {begin}, inside the tensor before it (which ends at {previous})");
            if (begin > previous) throw Bad($"begins at byte {begin}, leaving a gap after the tensor before it (which ends at {previous})");
            var bytes = ByteCount(shape);
            if (bytes != end - begin)
                throw Bad($"of shape [{string.Join(", ", shape)}] needs {(bytes is { } b ? b.ToString() : "too many")} bytes, but its data_offsets [{begin}, {end}) hold {end - begin}");
            entries.Add(new TensorEntry(name, shape.Select(d => (int)d).ToArray(), begin, end));
        }
        var total = entries.Count == 0 ? 0 : entries[^1].End;
        if (total > Array.MaxLength)
            throw new GraphFileException(path, $"the tensors take {total} bytes, more than this library reads ({Array.MaxLength})", "the file is damaged or not a graph file");
        return entries;
    }

    public static Dictionary<string, DoubleTensor> Decode(IReadOnlyList<TensorEntry> entries, ReadOnlySpan<byte> data)
    {
        var tensors = new Dictionary<string, DoubleTensor>();
        foreach (var entry in entries)
        {
            var values = new double[(entry.End - entry.Begin) / 8];
            var bytes = data[(int)entry.Begin..(int)entry.End];
            for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadDoubleLittleEndian(bytes[(8 * i)..]);
            tensors[entry.Name] = DoubleTensor.FromShape(entry.Shape, values);
        }
        return tensors;
    }

    /// <summary>8 times the product of <paramref name="shape"/>, or null when that exceeds what a file can hold.</summary>
    private static long? ByteCount(long[] shape)
    {
        long count = 1;
        if (shape.Contains(0)) return 0;
        foreach (var d in shape)
        {
            if (d > Array.MaxLength / 8 / count) return null;
            count *= d;
        }
        return count * 8;
    }

    private static long[]? Integers(JsonNode? json, long max)
    {
        if (json is not JsonArray items) return null;
        var values = new long[items.Count];
        for (int i = 0; i < items.Count; i++)
        {
            if (items[i] is not JsonValue v || v.GetValueKind() != JsonValueKind.Number || !v.TryGetValue<long>(out var x) || x < 0 || x > max)
                return null;
            values[i] = x;
        }
        return values;
    }
}
