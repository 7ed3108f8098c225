using System.Globalization;
using System.Text.Json.Nodes;
using Duality.Ir;

namespace Duality.Persistence;

/// <summary>Nodes to and from JSON objects; sources by name, weights by tensor name ("node.field").</summary>
internal static class GraphJson
{
    public static JsonObject Write(Node node, Graph graph, List<(string, DoubleTensor)> tensors)
    {
        string Source(NodeId id) => graph[id].Name;
        JsonNode? Tensor(string field, DoubleTensor? value)
        {
            if (value is null) return null;
            var name = $"{node.Name}.{field}";
            tensors.Add((name, value));
            return name;
        }
        var o = new JsonObject { ["kind"] = node.GetType().Name, ["name"] = node.Name };
        switch (node)
        {
            case Input n:
                o["features"] = n.Features;
                break;
            case Projection n:
                (o["source"], o["in"], o["out"], o["bias"]) = (Source(n.Source), n.InFeatures, n.OutFeatures, n.Bias);
                (o["weight"], o["biasValues"]) = (Tensor("weight", n.Weights?.Weight), Tensor("bias", n.Weights?.Bias));
                break;
            case Gate n:
                (o["value"], o["gating"], o["activation"]) = (Source(n.Value), Source(n.Gating), n.Activation.ToString());
                break;
            case LinearRecurrence n:
                (o["source"], o["width"], o["state"], o["readout"], o["trainable"]) =
                    (Source(n.Source), n.Width, n.State.ToString(), n.Readout.ToString(), n.TrainableLambda);
                o["decay"] = n.Decay is { } d ? Source(d) : null;
                (o["lambda"], o["initialState"]) = (Tensor("lambda", n.Lambda), Tensor("initial_state", n.InitialState));
                break;
            case Attention n:
                (o["source"], o["in"], o["heads"], o["key"], o["value"], o["causal"]) =
                    (Source(n.Source), n.InFeatures, n.Heads, n.KeyWidth, n.ValueWidth, n.Causal);
                (o["kernel"], o["featureMap"], o["decay"], o["out"], o["phase"], o["inputDependentDecay"]) =
                    (n.Kernel.ToString(), n.FeatureMap.ToString(), n.Decay, n.OutFeatures, n.DecayPhase, n.InputDependentDecay);
                var w = n.Weights;
                (o["query"], o["keys"], o["values"], o["output"]) =
                    (Tensor("query", w?.Query), Tensor("key", w?.Key), Tensor("value", w?.Value), Tensor("output", w?.Output));
                (o["decayWeight"], o["decayBias"]) = (Tensor("decay_weight", w?.DecayWeight), Tensor("decay_bias", w?.DecayBias));
                break;
            case Activation n:
                (o["source"], o["activation"]) = (Source(n.Source), n.Kind.ToString());
                break;
            case Add n:
                (o["left"], o["right"]) = (Source(n.Left), Source(n.Right));
                break;
            case Concat n:
                o["parts"] = new JsonArray(n.Parts.Select(p => (JsonNode)Source(p)).ToArray());
                break;
            case Slice n:
                (o["source"], o["start"], o["length"]) = (Source(n.Source), n.Start, n.Length);
                break;
            case LayerNorm n:
                (o["source"], o["width"], o["epsilon"], o["affine"]) = (Source(n.Source), n.Width, n.Epsilon, n.Affine);
                (o["gain"], o["biasValues"]) = (Tensor("gain", n.Weights?.Gain), Tensor("bias", n.Weights?.Bias));
                break;
            case RmsNorm n:
                (o["source"], o["width"], o["epsilon"], o["affine"]) = (Source(n.Source), n.Width, n.Epsilon, n.Affine);
                o["gain"] = Tensor("gain", n.Weights?.Gain);
                break;
            case Scale n:
                (o["source"], o["factor"]) = (Source(n.Source), n.Factor);
                break;
            default:
                throw new InvalidOperationException($"bug in GraphFile: no format for {node.GetType().Name}");
        }
        return o;
    }

    public static Graph Read(string path, JsonObject graph, Dictionary<string, DoubleTensor> tensors)
    {
        var ids = new Dictionary<string, NodeId>();
        var nodes = new List<Node>();
        if (graph["nodes"] is not JsonArray entries) throw new GraphFileException(path, "the graph has no node list", "the file is damaged");
        foreach (var entry in entries)
        {
            var reader = new Reader(path, entry as JsonObject ?? throw new GraphFileException(path, "a node is not a JSON object", "the file is damaged"), ids, tensors);
            var node = reader.Node();
            ids[node.Name] = new NodeId(nodes.Count);
            nodes.Add(node);
        }
        var outputs = (graph["outputs"] as JsonArray ?? []).Select(o => ids.TryGetValue((string?)o ?? "", out var id)
            ? id : throw new GraphFileException(path, $"output '{o}' names no node", "the file is damaged")).ToList();
        try
        {
            return Graph.Create(nodes, outputs);
        }
        catch (GraphException e)
        {
            throw new GraphFileException(path, "the graph in the file does not verify:\n" + e.Message,
                "the file was edited by hand or its weights do not fit its nodes; save the graph again", e);
        }
    }

    private sealed class Reader(string path, JsonObject o, Dictionary<string, NodeId> ids, Dictionary<string, DoubleTensor> tensors)
    {
        private string Name => (string?)o["name"] ?? "(unnamed)";

        private Exception Bad(string field, string problem) =>
            new GraphFileException(path, $"node '{Name}': field '{field}' {problem}", "the file is damaged or was written by another program");

        private JsonNode Field(string field) => o[field] ?? throw Bad(field, "is missing");

        private int Int(string field) => Field(field).GetValueKind() == System.Text.Json.JsonValueKind.Number ? (int)Field(field) : throw Bad(field, "is not a number");
        private double Double(string field) => Field(field).GetValueKind() == System.Text.Json.JsonValueKind.Number ? (double)Field(field) : throw Bad(field, "is not a number");
        private double? OptionalDouble(string field) => o[field] is null ? null : Double(field);
        private int? OptionalInt(string field) => o[field] is null ? null : Int(field);
        private bool Bool(string field) => Field(field).GetValueKind() is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False ? (bool)Field(field) : throw Bad(field, "is not true or false");

        private T Enum<T>(string field) where T : struct, System.Enum =>
            System.Enum.TryParse<T>((string?)Field(field), out var value) ? value : throw Bad(field, $"is not one of {string.Join(", ", System.Enum.GetNames<T>())}");

        private NodeId Source(string field) =>
            ids.TryGetValue((string?)Field(field) ?? "", out var id) ? id : throw Bad(field, $"names '{o[field]}', which is not an earlier node");

        private DoubleTensor? Tensor(string field) =>
            o[field] is null ? null
            : tensors.TryGetValue((string?)o[field] ?? "", out var t) ? t : throw Bad(field, $"names tensor '{o[field]}', which the file does not hold");

        public Node Node()
        {
            var name = (string?)Field("name") ?? throw Bad("name", "is not a string");
            return (string?)Field("kind") switch
            {
                nameof(Input) => new Input(name, Int("features")),
                nameof(Projection) => new Projection(name, Source("source"), Int("in"), Int("out"), Bool("bias"),
                    Tensor("weight") is { } w ? new ProjectionWeights(w, Tensor("biasValues")) : null),
                nameof(Gate) => new Gate(name, Source("value"), Source("gating"), Enum<ActivationKind>("activation")),
                nameof(LinearRecurrence) => new LinearRecurrence(name, Source("source"), Int("width"), Enum<StateKind>("state"),
                    Enum<ComplexReadout>("readout"), Bool("trainable"), o["decay"] is null ? null : Source("decay"), Tensor("lambda"),
                    Tensor("initialState")),
                nameof(Attention) => new Attention(name, Source("source"), Int("in"), Int("heads"), Int("key"), Int("value"), Bool("causal"),
                    Enum<AttentionKernel>("kernel"), Enum<ActivationKind>("featureMap"), OptionalDouble("decay"), OptionalInt("out"),
                    Tensor("query") is { } q
                        ? new AttentionWeights(q, Tensor("keys") ?? throw Bad("keys", "is missing"), Tensor("values") ?? throw Bad("values", "is missing"),
                            Tensor("output"), Tensor("decayWeight"), Tensor("decayBias"))
                        : null,
                    OptionalDouble("phase"), Bool("inputDependentDecay")),
                nameof(Activation) => new Activation(name, Source("source"), Enum<ActivationKind>("activation")),
                nameof(Add) => new Add(name, Source("left"), Source("right")),
                nameof(Concat) => new Concat(name, (Field("parts") as JsonArray ?? throw Bad("parts", "is not a list"))
                    .Select(p => ids.TryGetValue((string?)p ?? "", out var id) ? id : throw Bad("parts", $"names '{p}', which is not an earlier node"))
                    .ToValueList()),
                nameof(Slice) => new Slice(name, Source("source"), Int("start"), Int("length")),
                nameof(LayerNorm) => new LayerNorm(name, Source("source"), Int("width"), Double("epsilon"), Bool("affine"),
                    Tensor("gain") is { } g ? new NormWeights(g, Tensor("biasValues")) : null),
                nameof(RmsNorm) => new RmsNorm(name, Source("source"), Int("width"), Double("epsilon"), Bool("affine"),
                    Tensor("gain") is { } g ? new NormWeights(g, null) : null),
                nameof(Scale) => new Scale(name, Source("source"), Double("factor")),
                var kind => throw Bad("kind", $"is '{kind}', not a node kind of this library"),
            };
        }
    }
}
