using Duality.Ir;

namespace Duality.Passes;

/// <summary>
/// Rebuilds a graph node by node, letting a pass replace a node by a subgraph. Old ids are mapped
/// to new ones as nodes are copied, so later nodes keep reading the right values.
/// </summary>
internal sealed class GraphEmitter(Graph source, string pass)
{
    private readonly List<Node> nodes = [];
    private readonly HashSet<string> names = source.Nodes.Select(n => n.Name).ToHashSet();
    private readonly NodeId[] map = new NodeId[source.Nodes.Count];

    /// <summary>An emitted node, by name.</summary>
    public Node NodeNamed(string name) => nodes.First(n => n.Name == name);

    /// <summary>The new id of an old node.</summary>
    public NodeId Mapped(NodeId old) => map[old.Index];

    /// <summary>Copies an old node, reading its sources' new ids.</summary>
    public void Copy(NodeId old) => map[old.Index] = Append(source[old].MapSources(Mapped));

    /// <summary>Records that <paramref name="old"/> is now computed by <paramref name="replacement"/>.</summary>
    public void Replace(NodeId old, NodeId replacement) => map[old.Index] = replacement;

    /// <summary>Appends a new node; its name must be fresh.</summary>
    public NodeId Add(Node node)
    {
        if (!names.Add(node.Name)) throw new InvalidOperationException($"bug in pass {pass}: name '{node.Name}' emitted twice");
        return Append(node);
    }

    /// <summary>A name not used by the source graph or any emitted node: the wanted one, else with a suffix.</summary>
    public string Fresh(string wanted)
    {
        var name = wanted;
        for (int i = 2; names.Contains(name); i++) name = $"{wanted}_{i}";
        return name;
    }

    /// <summary>Releases a name of the source graph so a replacement can take it (the node it named is being replaced).</summary>
    public void Release(string name) => names.Remove(name);

    /// <summary>The rebuilt graph, verified; a failure is a bug in the pass, and says so.</summary>
    public Graph Build()
    {
        var (graph, problems) = Graph.TryCreate(nodes, source.Outputs.Select(Mapped));
        return graph ?? throw new InvalidOperationException(
            $"bug in pass {pass}: the rewritten graph does not verify:\n{string.Join("\n", problems)}");
    }

    private NodeId Append(Node node)
    {
        nodes.Add(node);
        return new NodeId(nodes.Count - 1);
    }
}
