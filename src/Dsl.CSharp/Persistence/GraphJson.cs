using System.Text.Json;
using System.Text.Json.Nodes;
using Duality.Ir;

namespace Duality.Persistence;

/// <summary>
/// A graph to and from the JSON a graph file holds, derived from the node records:
///   {"nodes": [{"kind": "Projection", "fields": {"Name": "p", "Source": "x", "InFeatures": 3, ...}}, ...],
///    "outputs": ["p", ...]}
/// A node is its record's type name and its primary constructor's parameters by name (see
/// <see cref="FieldCodec"/>); sources are node names, tensors are names in the file's tensor table
/// ("node.field", such as "block1/proj.weights.weight"), each used by exactly one field.
/// </summary>
internal static class GraphJson
{
    public static JsonObject Write(Graph graph, GraphWriting writing)
    {
        var nodes = new JsonArray();
        foreach (var node in graph.Nodes)
        {
            writing.NodeName = node.Name;
            var type = node.GetType();
            if (!NodeRecords.ByKind.TryGetValue(type.Name, out var kind) || kind != type)
                throw writing.CannotNode($"is a {type.FullName}, not a node record of Duality.Dsl",
                    "graph files hold the node kinds of NodeKinds.All; rewrite the node into those first");
            nodes.Add(new JsonObject { ["kind"] = type.Name, ["fields"] = RecordShape.OfNode(type).Write(node, writing, "") });
        }
        return new JsonObject
        {
            ["nodes"] = nodes,
            ["outputs"] = new JsonArray(graph.Outputs.Select(o => (JsonNode)JsonValue.Create(writing.NameOf(o))).ToArray()),
        };
    }

    public static Graph Read(JsonObject json, GraphReading reading)
    {
        reading.ExpectKeys(json, "the graph description", "nodes", "outputs");
        if (json["nodes"] is not JsonArray entries) throw reading.Malformed("the graph description's \"nodes\" is not a list");
        if (json["outputs"] is not JsonArray outputs) throw reading.Malformed("the graph description's \"outputs\" is not a list");
        var nodes = new List<Node>();
        foreach (var entry in entries)
        {
            if (entry is not JsonObject o) throw reading.Malformed($"node #{nodes.Count} is {FieldCodec.Show(entry)}, not a JSON object");
            var fields = o["fields"] as JsonObject;
            reading.StartNode(nodes.Count, fields?["Name"] is JsonValue name && name.GetValueKind() == JsonValueKind.String ? name.GetValue<string>() : null);
            reading.ExpectKeys(o, $"node #{nodes.Count}", "kind", "fields");
            if (fields is null) throw reading.Bad("fields", "is not a JSON object");
            var kind = o["kind"] is JsonValue k && k.GetValueKind() == JsonValueKind.String ? k.GetValue<string>() : null;
            if (kind is null || !NodeRecords.ByKind.TryGetValue(kind, out var type))
                throw reading.Bad("kind", $"is {FieldCodec.Show(o["kind"])}, not a node kind of this library ({string.Join(", ", NodeRecords.ByKind.Keys)})");
            var node = (Node)RecordShape.OfNode(type).Read(fields, reading, "");
            reading.AddNode(node.Name);
            nodes.Add(node);
        }
        var outputIds = outputs.Select(o => o is JsonValue v && v.GetValueKind() == JsonValueKind.String
            ? reading.Output(v.GetValue<string>())
            : throw reading.Malformed($"an output is {FieldCodec.Show(o)}, not a node name")).ToList();
        reading.CheckEveryTensorUsed();
        try
        {
            return Graph.Create(nodes, outputIds);
        }
        catch (GraphException e)
        {
            throw reading.Malformed("the graph in the file does not verify:\n" + e.Message, e,
                "the file was written by another program or its weights do not fit its nodes; save the graph again");
        }
    }
}

/// <summary>Writing one graph: node names for sources, and its tensors collected under unique names.</summary>
internal sealed class GraphWriting(Graph graph, string path)
{
    private readonly HashSet<string> names = ["__metadata__"];

    public List<(string Name, DoubleTensor Value)> Tensors { get; } = [];

    public string NodeName { get; set; } = "";

    public string NameOf(NodeId id) => graph[id].Name;

    /// <summary>Adds a tensor named "node.field" ("p.weights.weight"), numbered when a name repeats.</summary>
    public string AddTensor(string field, DoubleTensor value)
    {
        var stem = $"{NodeName}.{string.Join(".", field.Split('.').Select(s => s.Length == 0 ? s : char.ToLowerInvariant(s[0]) + s[1..]))}";
        var name = stem;
        for (int n = 2; !names.Add(name); n++) name = $"{stem}~{n}";
        Tensors.Add((name, value));
        return name;
    }

    public GraphFileException Cannot(string field, string problem, string hint = "give the field a value its type allows") =>
        GraphFileException.CannotWrite(path, $"node '{NodeName}': field '{field}' {problem}", hint);

    public GraphFileException CannotNode(string problem, string hint) => GraphFileException.CannotWrite(path, $"node '{NodeName}' {problem}", hint);
}

/// <summary>Reading one graph: earlier nodes by name, the file's tensors and which field uses each.</summary>
internal sealed class GraphReading(string path, IReadOnlyDictionary<string, DoubleTensor> tensors)
{
    private const string Damaged = "the file is damaged or was written by another program; use a backup or save the graph again";
    private readonly Dictionary<string, NodeId> ids = [];
    private readonly Dictionary<string, string> users = [];
    private string node = "";

    public void StartNode(int index, string? name) => node = name is null ? $"node #{index}" : $"node '{name}'";

    public void AddNode(string name)
    {
        if (!ids.TryAdd(name, new NodeId(ids.Count))) throw BadNode($"repeats the name '{name}' of an earlier node");
    }

    public NodeId Source(string name, string field) =>
        ids.TryGetValue(name, out var id) ? id : throw Bad(field, $"names '{name}', which is not an earlier node");

    public NodeId Output(string name) =>
        ids.TryGetValue(name, out var id) ? id : throw Malformed($"output '{name}' names no node");

    public DoubleTensor Tensor(string name, string field)
    {
        if (!tensors.TryGetValue(name, out var tensor)) throw Bad(field, $"names tensor '{name}', which the file does not hold");
        var user = $"{node}, field '{field}'";
        if (!users.TryAdd(name, user)) throw Bad(field, $"names tensor '{name}', which {users[name]} already uses");
        return tensor;
    }

    public void CheckEveryTensorUsed()
    {
        if (tensors.Keys.FirstOrDefault(t => !users.ContainsKey(t)) is { } unused)
            throw Malformed($"tensor '{unused}' is used by no node");
    }

    public void ExpectKeys(JsonObject json, string what, params string[] keys)
    {
        foreach (var (key, _) in json)
            if (!keys.Contains(key)) throw Malformed($"{what} has an unknown key '{key}' (expected {string.Join(", ", keys)})");
        foreach (var key in keys)
            if (!json.ContainsKey(key)) throw Malformed($"{what} has no \"{key}\"");
    }

    public GraphFileException Bad(string field, string problem) => Malformed($"{node}: field '{field}' {problem}");

    public GraphFileException BadNode(string problem) => Malformed($"{node} {problem}");

    public GraphFileException Malformed(string problem, Exception? inner = null, string hint = Damaged) =>
        new(path, problem, hint, inner);
}
