using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Duality.Persistence;

namespace Duality.Interop;

/// <summary>A tensor of a state_dict file: its dtype as the file names it, its shape, and its values as float64 (null for a dtype that is not floating point).</summary>
internal sealed record StoredTensor(string DType, int[] Shape, double[]? Values)
{
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// Reading the two files a PyTorch state_dict is kept in: safetensors, and the zip archive of torch.save
/// (archive/data.pkl, read by <see cref="RestrictedUnpickler"/>, and archive/data/KEY, one storage each, little-endian).
/// Floating-point tensors (float64, float32, float16, bfloat16) are read exactly as float64; other dtypes are kept
/// with their name so that using one is refused by name. Every problem is a <see cref="GraphFileException"/>.
/// </summary>
internal static class StateDictFiles
{
    /// <summary>The largest file read (the library keeps every weight in memory as float64).</summary>
    private const long MaxBytes = int.MaxValue;

    private const string Damaged = "the file is damaged, or not a state_dict saved by torch.save or safetensors";

    public static Dictionary<string, StoredTensor> Read(string path)
    {
        try
        {
            if (Directory.Exists(path)) throw new GraphFileException(path, "it is a folder, not a file", "give the path of a .pt or .safetensors file");
            if (!File.Exists(path)) throw new GraphFileException(path, "the file does not exist", "check the path");
            var length = new FileInfo(path).Length;
            if (length > MaxBytes)
                throw new GraphFileException(path, $"the file has {length} bytes, more than this library reads ({MaxBytes})", "load a smaller state_dict");
            var bytes = File.ReadAllBytes(path);
            return Kind(bytes) switch
            {
                PyTorchFormat.Pickle => ReadArchive(bytes, path),
                _ => ReadSafeTensors(bytes, path),
            };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GraphFileException(path, $"the file cannot be opened or read: {e.Message}", "check the path and the file's permissions", e);
        }
        catch (Exception e) when (e is not (GraphFileException or OutOfMemoryException))
        {
            // every check above has its own message; this is the net for a damage no check foresaw
            throw new GraphFileException(path, $"the file is malformed ({e.GetType().Name}: {e.Message})", Damaged, e);
        }
    }

    /// <summary>A zip archive (torch.save since PyTorch 1.6) or, otherwise, safetensors; a legacy torch.save pickle is refused.</summary>
    private static PyTorchFormat Kind(byte[] bytes) =>
        bytes.Length >= 4 && bytes[0] == 0x50 && bytes[1] == 0x4b && bytes[2] == 0x03 && bytes[3] == 0x04 ? PyTorchFormat.Pickle : PyTorchFormat.SafeTensors;

    private static Dictionary<string, StoredTensor> ReadArchive(byte[] bytes, string path)
    {
        using var archive = new ZipArchive(new MemoryStream(bytes, writable: false), ZipArchiveMode.Read);
        var pickles = archive.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal)
                                                 && e.FullName.IndexOf('/') == e.FullName.Length - "/data.pkl".Length).ToList();
        if (pickles.Count != 1)
            throw new GraphFileException(path, $"the archive holds {pickles.Count} files NAME/data.pkl, not one", Damaged);
        var prefix = pickles[0].FullName[..^"data.pkl".Length];
        if (archive.GetEntry(prefix + "byteorder") is { } order && ReadEntry(order, 16, path) is var orderBytes
            && Encoding.ASCII.GetString(orderBytes).Trim() is var byteOrder && byteOrder != "little")
            throw new GraphFileException(path, $"the storages are {byteOrder}-endian", "save the state_dict on a little-endian machine");
        var root = RestrictedUnpickler.Load(ReadEntry(pickles[0], 100_000_000, path), path, pickles[0].FullName);
        if (root is not PickledDict dict)
            throw new GraphFileException(path, $"the pickle holds {RestrictedUnpickler.Show(root)}, not a dict of tensors",
                "save the state_dict: torch.save(model.state_dict(), path)");
        var storages = new Dictionary<string, byte[]>();
        var tensors = new Dictionary<string, StoredTensor>();
        foreach (var (keyObject, value) in dict.Items)
        {
            if (keyObject is not string key)
                throw new GraphFileException(path, $"the state_dict has the key {RestrictedUnpickler.Show(keyObject)}, not a string", Damaged);
            if (value is not PickledTensor tensor)
                throw new GraphFileException(path, $"the state_dict's entry '{key}' is {RestrictedUnpickler.Show(value)}, not a tensor",
                    "save a state_dict of tensors only: torch.save(model.state_dict(), path)");
            var storage = tensor.Storage;
            if (!storages.TryGetValue(storage.Key, out var data))
            {
                var entry = archive.GetEntry(prefix + "data/" + storage.Key)
                    ?? throw new GraphFileException(path, $"tensor '{key}' reads the storage '{storage.Key}', which the archive does not hold", Damaged);
                storages[storage.Key] = data = ReadEntry(entry, MaxBytes, path);
            }
            tensors[key] = Gather(key, tensor, data, path);
        }
        return tensors;
    }

    private static readonly Dictionary<string, (string DType, int Size)> StorageTypes = new()
    {
        ["DoubleStorage"] = ("F64", 8), ["FloatStorage"] = ("F32", 4), ["HalfStorage"] = ("F16", 2), ["BFloat16Storage"] = ("BF16", 2),
        ["LongStorage"] = ("I64", 8), ["IntStorage"] = ("I32", 4), ["ShortStorage"] = ("I16", 2), ["CharStorage"] = ("I8", 1),
        ["ByteStorage"] = ("U8", 1), ["BoolStorage"] = ("BOOL", 1), ["ComplexDoubleStorage"] = ("C128", 16), ["ComplexFloatStorage"] = ("C64", 8),
    };

    /// <summary>The tensor's values read through its offset and strides (a view of a shared storage reads as PyTorch reads it).</summary>
    private static StoredTensor Gather(string key, PickledTensor tensor, byte[] data, string path)
    {
        GraphFileException Bad(string problem) => new(path, $"tensor '{key}' {problem}", Damaged);
        var (dtype, size) = StorageTypes.GetValueOrDefault(tensor.Storage.StorageType, (tensor.Storage.StorageType, 0));
        if (tensor.Shape.Any(d => d < 0 || d > int.MaxValue)) throw Bad($"has the size [{string.Join(", ", tensor.Shape)}]");
        var shape = tensor.Shape.Select(d => (int)d).ToArray();
        long count = 1;
        foreach (var d in shape) count = d == 0 || count == 0 ? 0 : count <= MaxBytes / d ? count * d : throw Bad("has too many elements");
        if (!IsFloat(dtype)) return new StoredTensor(dtype, shape, null);
        long available = data.Length / size;
        if (tensor.Offset < 0 || tensor.Stride.Any(s => s < 0)) throw Bad("has a negative storage offset or stride");
        if (count > 0)
        {
            long last = tensor.Offset;
            for (int i = 0; i < shape.Length; i++) last = checked(last + (shape[i] - 1) * tensor.Stride[i]);
            if (last >= available)
                throw Bad($"reads element {last} of its storage '{tensor.Storage.Key}', which holds {available}");
        }
        var values = new double[count];
        var index = new int[shape.Length];
        for (long n = 0; n < count; n++)
        {
            long at = tensor.Offset;
            for (int i = 0; i < shape.Length; i++) at += index[i] * tensor.Stride[i];
            values[n] = Decode(dtype, data.AsSpan((int)(at * size), size));
            for (int i = shape.Length - 1; i >= 0; i--)
            {
                if (++index[i] < shape[i]) break;
                index[i] = 0;
            }
        }
        return new StoredTensor(dtype, shape, values);
    }

    private static bool IsFloat(string dtype) => dtype is "F64" or "F32" or "F16" or "BF16";

    private static double Decode(string dtype, ReadOnlySpan<byte> bytes) => dtype switch
    {
        "F64" => BinaryPrimitives.ReadDoubleLittleEndian(bytes),
        "F32" => BinaryPrimitives.ReadSingleLittleEndian(bytes),
        "F16" => (double)BinaryPrimitives.ReadHalfLittleEndian(bytes),
        _ => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes) << 16),
    };

    private static byte[] ReadEntry(ZipArchiveEntry entry, long limit, string path)
    {
        if (entry.Length > limit)
            throw new GraphFileException(path, $"the archive's '{entry.FullName}' has {entry.Length} bytes, more than {limit}", Damaged);
        using var stream = entry.Open();
        var buffer = new byte[entry.Length];
        stream.ReadExactly(buffer);
        return buffer;
    }

    private static Dictionary<string, StoredTensor> ReadSafeTensors(byte[] bytes, string path)
    {
        GraphFileException Bad(string problem) => new(path, problem, Damaged);
        // torch.save's legacy pickle begins with its magic number, a LONG1 of 10 bytes (a header length of 176 MB otherwise)
        if (bytes.Length >= 4 && bytes[0] == 0x80 && bytes[1] == 0x02 && bytes[2] == 0x8a && bytes[3] == 0x0a)
            throw new GraphFileException(path, "the file is a pickle in torch.save's legacy format (before PyTorch 1.6), which is not read",
                "save the state_dict again with a current PyTorch (torch.save writes a zip archive), or as .safetensors");
        if (bytes.Length < 8) throw Bad($"the file has {bytes.Length} bytes, too few for a safetensors header length");
        var declared = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (declared < 2 || declared > (ulong)Math.Min(bytes.Length - 8, GraphFile.MaxHeaderBytes))
            throw Bad($"the safetensors header length is {declared} bytes, but the file has {bytes.Length - 8} after it");
        var headerLength = (int)declared;
        var header = JsonNode.Parse(bytes.AsSpan(8, headerLength),
            documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false, MaxDepth = 16 }) as JsonObject
            ?? throw Bad("the safetensors header is not a JSON object");
        var data = bytes.AsSpan(8 + headerLength);
        var tensors = new Dictionary<string, StoredTensor>();
        var ranges = new List<(long Begin, long End, string Name)>();
        foreach (var (name, json) in header)
        {
            if (name == "__metadata__") continue;
            GraphFileException BadTensor(string problem) => Bad($"tensor '{name}' {problem}");
            if (json is not JsonObject entry) throw BadTensor("is not described by a JSON object");
            var dtype = entry["dtype"] is JsonValue d && d.GetValueKind() == JsonValueKind.String ? d.GetValue<string>() : throw BadTensor("has no dtype");
            var shape = entry["shape"] is JsonArray s ? s.Select(v => v!.GetValue<long>()).ToArray() : throw BadTensor("has no shape");
            var offsets = entry["data_offsets"] is JsonArray { Count: 2 } o ? o.Select(v => v!.GetValue<long>()).ToArray() : throw BadTensor("has no data_offsets");
            if (shape.Any(x => x < 0 || x > int.MaxValue)) throw BadTensor($"has the shape [{string.Join(", ", shape)}]");
            var size = dtype switch { "F64" or "I64" or "U64" or "C128" => 8, "F32" or "I32" or "U32" or "C64" => 4, "F16" or "BF16" or "I16" or "U16" => 2, "I8" or "U8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => 1, _ => 0 };
            if (dtype is "C128" or "C64") size *= 2;
            long count = 1;
            foreach (var x in shape) count = x == 0 || count == 0 ? 0 : count <= MaxBytes / x ? count * x : throw BadTensor("has too many elements");
            var (begin, end) = (offsets[0], offsets[1]);
            if (begin < 0 || end < begin || end > data.Length)
                throw BadTensor($"has data_offsets [{begin}, {end}] outside the {data.Length} bytes of data");
            if (size > 0 && end - begin != count * size)
                throw BadTensor($"of dtype {dtype} and shape [{string.Join(", ", shape)}] needs {count * size} bytes, but its data_offsets hold {end - begin}");
            ranges.Add((begin, end, name));
            double[]? values = null;
            if (IsFloat(dtype))
            {
                values = new double[count];
                for (int i = 0; i < count; i++) values[i] = Decode(dtype, data.Slice((int)(begin + i * size), size));
            }
            tensors[name] = new StoredTensor(dtype, shape.Select(x => (int)x).ToArray(), values);
        }
        ranges.Sort();
        for (int i = 1; i < ranges.Count; i++)
            if (ranges[i].Begin < ranges[i - 1].End)
                throw Bad($"tensors '{ranges[i - 1].Name}' and '{ranges[i].Name}' overlap in the data");
        return tensors;
    }
}
