using System.Buffers.Binary;
using System.Collections.Specialized;
using System.Text;
using System.Text.Json.Nodes;
using Duality.Ir;
using Duality.Persistence;
using TorchSharp;
using TorchSharp.PyBridge;

namespace Duality.Interop;

/// <summary>The two files a PyTorch state_dict is kept in.</summary>
public enum PyTorchFormat
{
    /// <summary>safetensors: an 8-byte little-endian header length, a JSON header, the raw little-endian tensors (<c>safetensors.torch.load_file</c>).</summary>
    SafeTensors,

    /// <summary>The zip archive <c>torch.save(model.state_dict(), "file.pt")</c> writes, read with <c>torch.load(path, weights_only=True)</c>.</summary>
    Pickle,
}

/// <summary>
/// Weights in and out of PyTorch: a state_dict (a <c>.safetensors</c> file, or a <c>.pt</c> file written by
/// <c>torch.save(model.state_dict(), path)</c>) loaded into a graph's weight slots, and a graph's weights written as a
/// state_dict that <c>torch.load(path, weights_only=True)</c> and <c>safetensors.torch.load_file</c> read.
/// <para>
/// Tensors are taken row-major as they are, never transposed: a slot's shape is its node's (see
/// <see cref="WeightMapping"/> for the layouts; <c>torch.nn.Linear</c>'s weight [out, in] is <see cref="Projection"/>'s
/// Weight [Out, In]). float64, float32, float16 and bfloat16 tensors are read exactly as float64; weights are written as
/// float64.
/// </para>
/// <para>
/// A <c>.pt</c> file is a pickle, which in Python can run any code. It is read here as <c>weights_only=True</c> reads
/// it: by an interpreter that builds tensors (<c>torch._utils._rebuild_tensor_v2</c>, storages), <c>OrderedDict</c>s,
/// dicts, lists, tuples, numbers and strings, and refuses any other global (<c>os.system</c>, <c>builtins.eval</c>, a
/// model's class, ...) with a <see cref="GraphFileException"/> naming it. Nothing in a file is ever executed.
/// </para>
/// <para>
/// Errors: a file that cannot be read, is damaged, names a forbidden global or holds a mapped tensor of a dtype that is
/// not floating point is a <see cref="GraphFileException"/> (one that cannot be written too). A file that does not fit
/// the graph (a mapped key the file lacks, a key of the file the mapping does not name, a tensor of the wrong shape, a
/// mapping naming a node or slot the graph does not have) is a <see cref="GraphException"/> listing every such problem,
/// each naming the PyTorch key, the node and the slot, the expected and actual shapes, and the fix.
/// </para>
/// </summary>
public static class PyTorchWeights
{
    /// <summary>
    /// <paramref name="graph"/> with the weights of the state_dict in <paramref name="path"/> (safetensors or a torch.save
    /// archive, told apart by their bytes) set in the slots <paramref name="mapping"/> names. Slots the mapping does not
    /// name keep their values. A node that receives a tensor must end with every weight it needs.
    /// </summary>
    /// <param name="graph">The graph whose weights are set.</param>
    /// <param name="path">The .pt or .safetensors file.</param>
    /// <param name="mapping">
    /// Which PyTorch key fills which slot. Every key it maps must be in the file, and every key of the file must be mapped
    /// or ignored. Without one, the file's keys must be "node.slot" names (as <see cref="Save"/> writes them), and the
    /// slots the file does not hold keep their values.
    /// </param>
    /// <returns>A new graph, verified again.</returns>
    /// <exception cref="GraphFileException">The file cannot be read, is damaged, is a hostile pickle, or a mapped tensor is not floating point.</exception>
    /// <exception cref="GraphException">The file does not fit the graph: missing, unmapped or misshapen keys, unknown nodes or slots.</exception>
    public static Graph Load(Graph graph, string path, WeightMapping? mapping = null)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(path);
        var tensors = StateDictFiles.Read(path);
        var byName = mapping is null;
        mapping ??= WeightMapping.ByNodeNames(graph);
        var file = Path.GetFileName(path);
        var problems = new List<Diagnostic>();

        foreach (var key in tensors.Keys.Where(k => !mapping.Targets.ContainsKey(k) && !mapping.Ignored.Contains(k)).Order(StringComparer.Ordinal))
            problems.Add(new Diagnostic("unmapped key", key, $"PyTorch tensor {tensors[key].ShapeText} in '{file}'",
                byName
                    ? $"name it 'node.Slot' of this graph, or pass a WeightMapping: .Map(\"{key}\", node, slot) or .Ignore(\"{key}\")"
                    : $"map it to a weight slot with .Map(\"{key}\", node, slot) (or .Linear for a torch.nn.Linear), or skip it with .Ignore(\"{key}\")",
                Expected: byName ? "a key 'node.Slot' naming a weight slot of this graph" : "a key the mapping names or ignores",
                Received: $"'{key}'"));

        var loaded = new Dictionary<string, Dictionary<string, DoubleTensor>>();
        foreach (var (key, target) in mapping.Targets.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            if (!graph.Contains(target.Node))
            {
                problems.Add(new Diagnostic("unknown node", target.Node, $"the target of the PyTorch key '{key}'",
                    $"map '{key}' to one of: {Shown(graph.Nodes.Where(n => n.WeightSlots.Count > 0).Select(n => n.Name))}"));
                continue;
            }
            var node = graph[graph.IdOf(target.Node)];
            var slot = node.WeightSlots.FirstOrDefault(s => s.Name == target.Slot);
            if (slot is null)
            {
                problems.Add(new Diagnostic("unknown weight slot", node.Name, node.Describe(),
                    node.WeightSlots.Count == 0 ? $"this node holds no weights; map '{key}' to another node"
                        : $"map '{key}' to one of this node's slots: {Shown(node.WeightSlots.Select(s => s.Name))}",
                    Expected: "a weight slot of the node", Received: $"'{target.Slot}' (the target of the PyTorch key '{key}')"));
                continue;
            }
            var expected = "[" + string.Join(", ", slot.Shape) + "]";
            if (!tensors.TryGetValue(key, out var tensor))
            {
                if (!byName)
                    problems.Add(new Diagnostic("missing key", node.Name, node.Describe(),
                        $"check the key's spelling against the file's keys, or drop it from the mapping",
                        Expected: $"the PyTorch key '{key}' for the slot {slot.Name} {expected}",
                        Received: $"'{file}' holds no such key; its keys: {Shown(tensors.Keys.Order(StringComparer.Ordinal))}"));
                continue;
            }
            if (tensor.Values is null)
                throw new GraphFileException(path,
                    $"tensor '{key}' (for the slot {target}) has dtype {tensor.DType}; weights are read from floating-point tensors only (float64, float32, float16, bfloat16)",
                    $"convert it in PyTorch (state_dict[\"{key}\"] = state_dict[\"{key}\"].double()) and save again, or .Ignore(\"{key}\") it");
            if (!tensor.Shape.SequenceEqual(slot.Shape))
            {
                var transposed = tensor.Shape.Length == 2 && slot.Shape.Length == 2 && tensor.Shape[0] == slot.Shape[1] && tensor.Shape[1] == slot.Shape[0];
                problems.Add(new Diagnostic("weight shape mismatch", node.Name, node.Describe(),
                    transposed
                        ? $"the tensor is the transpose of the slot's layout ([out, in], as torch.nn.Linear stores its weight); save it transposed in PyTorch (.T.contiguous()), or map '{key}' to another slot"
                        : $"map '{key}' to a slot of shape {tensor.ShapeText}, or declare '{node.Name}' with sizes giving {expected}",
                    Expected: $"{slot.Name} {expected}", Received: $"PyTorch key '{key}' of shape {tensor.ShapeText}"));
                continue;
            }
            if (!loaded.TryGetValue(node.Name, out var values)) loaded[node.Name] = values = [];
            values[slot.Name] = DoubleTensor.FromShape(slot.Shape, tensor.Values);
        }
        if (problems.Count > 0) throw new GraphException(problems);

        foreach (var (name, values) in loaded)
        {
            var node = graph[graph.IdOf(name)];
            foreach (var slot in node.WeightSlots)
                if (!values.ContainsKey(slot.Name) && slot.Value is null && slot.Draw is not WeightDraw.None)
                    problems.Add(new Diagnostic("missing weight", node.Name, node.Describe(),
                        byName ? $"save the file with the slot {slot.Name}, or give the node its weights first (InitializeWeights.Run)"
                            : $"map a PyTorch key to the slot {slot.Name}, or give the node its weights first (InitializeWeights.Run)",
                        Expected: $"{slot.Name} [{string.Join(", ", slot.Shape)}] from the file or the graph",
                        Received: $"only {Shown(values.Keys)} from '{file}'"));
        }
        if (problems.Count > 0) throw new GraphException(problems);

        return graph.MapNodes(node =>
        {
            if (!loaded.TryGetValue(node.Name, out var values)) return node;
            foreach (var slot in node.WeightSlots)
                if (!values.ContainsKey(slot.Name) && slot.Value is { } kept) values[slot.Name] = kept;
            return node.WithWeights(values);
        });
    }

    /// <summary>
    /// Writes the weights of <paramref name="graph"/> as a PyTorch state_dict: without a mapping, every weight present
    /// under the key "node.Slot" ("block1/proj.Weight"); with one, exactly the mapped slots under their PyTorch keys (the
    /// state_dict of the module the mapping describes). Tensors are float64, row-major, in the slots' layouts. The file is
    /// replaced whole: a temporary file beside it is moved into place.
    /// </summary>
    /// <param name="graph">The graph whose weights are written.</param>
    /// <param name="path">The file to write.</param>
    /// <param name="format">safetensors, or the zip archive of torch.save (a .pt file).</param>
    /// <param name="mapping">The PyTorch keys of the slots to write; null for "node.Slot" names.</param>
    /// <exception cref="GraphException">The mapping names a node or slot the graph does not have, or a slot without a value.</exception>
    /// <exception cref="GraphFileException">The file cannot be written.</exception>
    public static void Save(Graph graph, string path, PyTorchFormat format, WeightMapping? mapping = null)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(path);
        if (!Enum.IsDefined(format))
            throw new ArgumentException($"the format {(int)format} is not defined; use PyTorchFormat.SafeTensors or PyTorchFormat.Pickle", nameof(format));
        var tensors = new List<(string Name, DoubleTensor Value)>();
        if (mapping is null)
        {
            foreach (var node in graph.Nodes)
                foreach (var slot in node.WeightSlots)
                    if (slot.Value is { } value) tensors.Add(($"{node.Name}.{slot.Name}", value));
        }
        else
        {
            var problems = new List<Diagnostic>();
            foreach (var (key, target) in mapping.Targets.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                var node = graph.Contains(target.Node) ? graph[graph.IdOf(target.Node)] : null;
                var slot = node?.WeightSlots.FirstOrDefault(s => s.Name == target.Slot);
                if (node is null)
                    problems.Add(new Diagnostic("unknown node", target.Node, $"the source of the PyTorch key '{key}'",
                        $"map '{key}' to one of: {Shown(graph.Nodes.Where(n => n.WeightSlots.Count > 0).Select(n => n.Name))}"));
                else if (slot is null)
                    problems.Add(new Diagnostic("unknown weight slot", node.Name, node.Describe(),
                        $"map '{key}' to one of this node's slots: {Shown(node.WeightSlots.Select(s => s.Name))}",
                        Received: $"'{target.Slot}' (the source of the PyTorch key '{key}')"));
                else if (slot.Value is null)
                    problems.Add(new Diagnostic("missing weight", node.Name, node.Describe(),
                        "give the graph weights before saving them (InitializeWeights.Run, or a trained model's ToGraph())",
                        Expected: $"a value in the slot {slot.Name} for the PyTorch key '{key}'", Received: "none"));
                else tensors.Add((key, slot.Value));
            }
            if (problems.Count > 0) throw new GraphException(problems);
        }
        var bytes = format == PyTorchFormat.SafeTensors ? SafeTensorsBytes(tensors, path) : ArchiveBytes(tensors, path);
        FileWriting.ReplaceAtomically(path, bytes);
    }

    /// <summary>
    /// The state_dict in <paramref name="path"/> (safetensors or a torch.save archive), every tensor as float64 in its
    /// own shape, keys in the file's order; read as <see cref="Load"/> reads it.
    /// </summary>
    /// <exception cref="GraphFileException">The file cannot be read, is damaged or hostile, or holds a tensor that is not floating point.</exception>
    public static IReadOnlyDictionary<string, DoubleTensor> Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var tensors = new Dictionary<string, DoubleTensor>();
        foreach (var (key, tensor) in StateDictFiles.Read(path))
            tensors[key] = tensor.Values is { } values ? DoubleTensor.FromShape(tensor.Shape, values)
                : throw new GraphFileException(path, $"tensor '{key}' has dtype {tensor.DType}; only floating-point tensors are read",
                    "convert it in PyTorch with .double(), or load the file with a WeightMapping that ignores the key");
        return tensors;
    }

    private static byte[] SafeTensorsBytes(List<(string Name, DoubleTensor Value)> tensors, string path)
    {
        var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        var data = TensorTable.Write(tensors, header, path);
        var text = Encoding.UTF8.GetBytes(header.ToJsonString());
        var padded = new byte[8 + (text.Length + 7) / 8 * 8];
        padded.AsSpan(8).Fill((byte)' ');
        text.CopyTo(padded, 8);
        BinaryPrimitives.WriteUInt64LittleEndian(padded, (ulong)(padded.Length - 8));
        return [.. padded, .. data];
    }

    /// <summary>A torch.save archive written by TorchSharp.PyBridge's pickler: an OrderedDict of float64 tensors.</summary>
    private static byte[] ArchiveBytes(List<(string Name, DoubleTensor Value)> tensors, string path)
    {
        var state = new OrderedDictionary();
        using var scope = torch.NewDisposeScope();
        foreach (var (name, value) in tensors)
            state[name] = torch.tensor(value.Data.ToArray(), value.Shape.Select(d => (long)d).ToArray(), torch.float64);
        try
        {
            using var stream = new MemoryStream();
            PyTorchPickler.PickleStateDict(stream, state, leaveOpen: true);
            return stream.ToArray();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw GraphFileException.CannotWrite(path, $"the state_dict cannot be pickled ({e.GetType().Name}: {e.Message})",
                "save it as PyTorchFormat.SafeTensors instead", e);
        }
    }

    private static string Shown(IEnumerable<string> names)
    {
        var list = names.ToList();
        return list.Count == 0 ? "(none)" : string.Join(", ", list.Take(12)) + (list.Count > 12 ? $", ... ({list.Count} in all)" : "");
    }
}
