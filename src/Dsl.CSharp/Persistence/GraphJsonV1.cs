using System.Text.Json;
using System.Text.Json.Nodes;

namespace Duality.Persistence;

/// <summary>
/// Version 1 graph descriptions, read by renaming them into version 2's: a v1 node was a flat object
///   {"kind": "Projection", "name": "p", "source": "x", "in": 3, "out": 4, "bias": true, "weight": "p.weight", "biasValues": "p.bias"}
/// and becomes
///   {"kind": "Projection", "fields": {"Name": "p", "Source": "x", "InFeatures": 3, "OutFeatures": 4, "Bias": true,
///                                     "Weights": {"Weight": "p.weight", "Bias": "p.bias"}}}
/// A weight record is present when its first tensor is. Version 1 knew only the kinds below.
/// </summary>
internal static class GraphJsonV1
{
    /// <summary>Per kind: v1 key (null: always null) and v2 field path ("Weights.Bias").</summary>
    private static readonly Dictionary<string, (string? V1, string V2)[]> renames = new()
    {
        ["Input"] = [("features", "Features")],
        ["Projection"] = [("source", "Source"), ("in", "InFeatures"), ("out", "OutFeatures"), ("bias", "Bias"),
            ("weight", "Weights.Weight"), ("biasValues", "Weights.Bias")],
        ["Gate"] = [("value", "Value"), ("gating", "Gating"), ("activation", "Activation")],
        ["LinearRecurrence"] = [("source", "Source"), ("width", "Width"), ("state", "State"), ("readout", "Readout"),
            ("trainable", "TrainableLambda"), ("decay", "Decay"), ("lambda", "Lambda"), ("initialState", "InitialState")],
        ["Attention"] = [("source", "Source"), ("in", "InFeatures"), ("heads", "Heads"), ("key", "KeyWidth"), ("value", "ValueWidth"),
            ("causal", "Causal"), ("kernel", "Kernel"), ("featureMap", "FeatureMap"), ("decay", "Decay"), ("out", "OutFeatures"),
            ("phase", "DecayPhase"), ("inputDependentDecay", "InputDependentDecay"),
            ("query", "Weights.Query"), ("keys", "Weights.Key"), ("values", "Weights.Value"), ("output", "Weights.Output"),
            ("decayWeight", "Weights.DecayWeight"), ("decayBias", "Weights.DecayBias")],
        ["Activation"] = [("source", "Source"), ("activation", "Kind")],
        ["Add"] = [("left", "Left"), ("right", "Right")],
        ["Concat"] = [("parts", "Parts")],
        ["Slice"] = [("source", "Source"), ("start", "Start"), ("length", "Length")],
        ["LayerNorm"] = [("source", "Source"), ("width", "Width"), ("epsilon", "Epsilon"), ("affine", "Affine"),
            ("gain", "Weights.Gain"), ("biasValues", "Weights.Bias")],
        ["RmsNorm"] = [("source", "Source"), ("width", "Width"), ("epsilon", "Epsilon"), ("affine", "Affine"),
            ("gain", "Weights.Gain"), (null, "Weights.Bias")],
        ["Scale"] = [("source", "Source"), ("factor", "Factor")],
    };

    /// <summary>The v1 graph description as a v2 one.</summary>
    public static JsonObject Upgrade(JsonObject graph, GraphReading reading)
    {
        reading.ExpectKeys(graph, "the graph description", "nodes", "outputs");
        if (graph["nodes"] is not JsonArray nodes) throw reading.Malformed("the graph description's \"nodes\" is not a list");
        return new JsonObject
        {
            ["nodes"] = new JsonArray(nodes.Select((n, i) => (JsonNode)UpgradeNode(n as JsonObject
                ?? throw reading.Malformed($"node #{i} is {FieldCodec.Show(n)}, not a JSON object"), i, reading)).ToArray()),
            ["outputs"] = graph["outputs"]?.DeepClone(),
        };
    }

    private static JsonObject UpgradeNode(JsonObject node, int index, GraphReading reading)
    {
        reading.StartNode(index, node["name"] is JsonValue n && n.GetValueKind() == JsonValueKind.String ? n.GetValue<string>() : null);
        var kind = node["kind"] is JsonValue k && k.GetValueKind() == JsonValueKind.String ? k.GetValue<string>() : null;
        if (kind is null || !renames.TryGetValue(kind, out var table))
            throw reading.Bad("kind", $"is {FieldCodec.Show(node["kind"])}, not a node kind of version 1 files ({string.Join(", ", renames.Keys)})");
        foreach (var (key, _) in node)
            if (key is not ("kind" or "name") && table.All(r => r.V1 != key))
                throw reading.Bad(key, $"is not a field of a version 1 {kind}");
        var fields = new JsonObject();
        if (node.TryGetPropertyValue("name", out var name)) fields["Name"] = name?.DeepClone();
        foreach (var group in table.GroupBy(r => r.V2.Contains('.') ? r.V2[..r.V2.IndexOf('.')] : null))
        {
            if (group.Key is null)
            {
                foreach (var (v1, v2) in group)
                    if (v1 is not null && node.TryGetPropertyValue(v1, out var value)) fields[v2] = value?.DeepClone();
                continue;
            }
            // a weight record: present when its first tensor is
            var members = group.ToList();
            if (node[members[0].V1!] is null)
            {
                fields[group.Key] = null;
                continue;
            }
            var weights = new JsonObject();
            foreach (var (v1, v2) in members)
                weights[v2[(group.Key.Length + 1)..]] = v1 is null ? null : node[v1]?.DeepClone();
            fields[group.Key] = weights;
        }
        return new JsonObject { ["kind"] = kind, ["fields"] = fields };
    }
}
