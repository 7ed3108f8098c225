using System.Text;

namespace Duality.Ir;

/// <summary>
/// A verified layer graph: nodes in construction order (a node reads only earlier nodes, so the
/// order is topological), named outputs, and every node's inferred width. Two graphs are equal
/// when their nodes and outputs are; however they were built.
/// </summary>
public sealed class Graph : IEquatable<Graph>
{
    private readonly Dictionary<string, NodeId> byName;

    private Graph(ValueList<Node> nodes, ValueList<NodeId> outputs, int[] widths, ValueList<Diagnostic> warnings)
    {
        Nodes = nodes;
        Outputs = outputs;
        Widths = widths.ToValueList();
        Warnings = warnings;
        byName = nodes.Select((n, i) => (n.Name, Id: new NodeId(i))).ToDictionary(p => p.Name, p => p.Id);
        Inputs = nodes.Select((n, i) => (n, i)).Where(p => p.n is Input).Select(p => new NodeId(p.i)).ToValueList();
    }

    /// Every node in construction order; a node's <see cref="NodeId"/> is its index here, and it reads only earlier nodes.
    public ValueList<Node> Nodes { get; }

    /// The output nodes, in the order a compiled model and the reference evaluator return them.
    public ValueList<NodeId> Outputs { get; }

    /// The <see cref="Input"/> nodes, in construction order: the order inputs are passed to a compiled model
    /// and to the reference evaluator.
    public ValueList<NodeId> Inputs { get; }

    /// <summary>The feature width each node produces, by index.</summary>
    public ValueList<int> Widths { get; }

    /// <summary>
    /// Problems that do not stop the graph from being built (<see cref="Severity.Warning"/>), found by the shape rules
    /// when the graph was created, such as a recurrence whose |lambda| &gt; 1 overflows on long sequences. Not part of
    /// the graph's equality: they follow from its nodes.
    /// </summary>
    public ValueList<Diagnostic> Warnings { get; }

    /// The node at <paramref name="id"/>.
    /// <exception cref="GraphException"><paramref name="id"/> is not a node of this graph.</exception>
    public Node this[NodeId id] => Nodes[Check(id).Index];

    /// The feature width the node at <paramref name="id"/> produces: its output is [batch, time, width].
    /// <exception cref="GraphException"><paramref name="id"/> is not a node of this graph.</exception>
    public int WidthOf(NodeId id) => Widths[Check(id).Index];

    private NodeId Check(NodeId id) =>
        id.Index >= 0 && id.Index < Nodes.Count
            ? id
            : throw new GraphException(new Diagnostic("unknown node", id.ToString(), $"not in this graph of {Nodes.Count} nodes",
                $"use an id from #0 to #{Nodes.Count - 1}, or IdOf(name)"));

    /// True when a node has the path <paramref name="name"/> (false for null).
    public bool Contains(string name) => name is not null && byName.ContainsKey(name);

    /// The id of the node with the path <paramref name="name"/>.
    /// <exception cref="GraphException">No node has that path; the message lists the first twelve paths.</exception>
    public NodeId IdOf(string name) =>
        name is not null && byName.TryGetValue(name, out var id)
            ? id
            : throw new GraphException(new Diagnostic("unknown node", name ?? "(null)", "not in this graph",
                $"use one of: {string.Join(", ", Nodes.Select(n => n.Name).Take(12))}{(Nodes.Count > 12 ? ", ..." : "")}"));

    /// The <see cref="Input"/> nodes themselves, in the order of <see cref="Inputs"/>.
    public IEnumerable<Input> InputNodes => Inputs.Select(i => (Input)this[i]);

    /// <summary>True when every node carries the weights it needs (the reference evaluator requires it).</summary>
    public bool HasAllWeights => Nodes.All(n => n.HasWeights);

    /// <summary>Verifies nodes and outputs; throws one <see cref="GraphException"/> listing every problem.</summary>
    public static Graph Create(IEnumerable<Node> nodes, IEnumerable<NodeId> outputs)
    {
        var (graph, problems) = TryCreate(nodes, outputs);
        return graph ?? throw new GraphException(problems);
    }

    /// <summary>
    /// Verifies nodes and outputs; returns the graph, or null and every problem (errors only: a graph that is built
    /// keeps its warnings in <see cref="Warnings"/>).
    /// </summary>
    public static (Graph? Graph, IReadOnlyList<Diagnostic> Problems) TryCreate(IEnumerable<Node> nodes, IEnumerable<NodeId> outputs)
    {
        if (nodes is null || outputs is null)
            return (null, [new Diagnostic(nodes is null ? "missing node list" : "missing output list", "(graph)", "graph",
                nodes is null ? "pass a list of nodes, starting with an Input" : "pass the ids of the output nodes")]);
        var nodeList = nodes.ToValueList();
        var outputList = outputs.ToValueList();
        var found = new List<Diagnostic>();
        var widths = new List<int?>();
        var seen = new HashSet<string>();
        for (int i = 0; i < nodeList.Count; i++)
        {
            var node = nodeList[i];
            if (node is null)
            {
                found.Add(new Diagnostic("missing node", $"#{i}", "null", "remove the null entry from the node list"));
                widths.Add(null);
                continue;
            }
            if (!string.IsNullOrEmpty(node.Name) && !seen.Add(node.Name))
                found.Add(new Diagnostic("duplicate name", node.Name, node.Describe(),
                    "give every node a unique path; use a scope such as 'block2/' for repeated blocks"));
            widths.Add(ShapeRules.Infer(node, new NodeId(i), nodeList, widths, found));
        }
        if (!nodeList.Any(n => n is Input))
            found.Add(new Diagnostic("no input", "(graph)", "graph", "start the graph with at least one Input node"));
        if (outputList.Count == 0)
            found.Add(new Diagnostic("no output", "(graph)", "graph", "mark at least one node as an output"));
        bool Known(NodeId o) => o.Index >= 0 && o.Index < nodeList.Count;
        foreach (var output in outputList.Where(o => !Known(o)).Distinct())
            found.Add(new Diagnostic("unknown node", "(graph outputs)", "graph", $"outputs must name nodes of the graph, #0 to #{nodeList.Count - 1}",
                Received: $"output {output}"));
        foreach (var duplicate in outputList.Where(Known).GroupBy(o => o).Where(g => g.Count() > 1))
            found.Add(new Diagnostic("duplicate output", nodeList[duplicate.Key.Index]?.Name ?? duplicate.Key.ToString(), "graph",
                "list each output once"));
        var problems = found.Where(d => d.Severity == Severity.Error).ToList();
        if (problems.Count > 0) return (null, problems);
        var warnings = found.Where(d => d.Severity == Severity.Warning).ToValueList();
        return (new Graph(nodeList, outputList, widths.Select(w => w!.Value).ToArray(), warnings), problems);
    }

    /// <summary>The same graph with one node replaced (verified again).</summary>
    public Graph WithNode(NodeId id, Node node) => ReferenceEquals(this[id], node) ? this : Create(Nodes.SetItem(id.Index, node), Outputs);

    /// <summary>
    /// The same graph with the weight slot <paramref name="slot"/> of the node named <paramref name="node"/> set to
    /// <paramref name="value"/> (a slot's name and layout: the node's <see cref="Node.WeightSlots"/>), verified again.
    /// </summary>
    /// <exception cref="GraphException">No such node or slot, the value has another shape than the slot's, or the node
    /// has no weights yet and the slot is not its only one (set them together, or initialise the graph first).</exception>
    public Graph WithWeight(string node, string slot, DoubleTensor value) =>
        WithWeights(node, new Dictionary<string, DoubleTensor> { [slot ?? throw new ArgumentNullException(nameof(slot))] = value });

    /// <summary>
    /// The same graph with several weight slots of the node named <paramref name="node"/> set at once (slot name to
    /// value); its other slots keep their values. Verified again.
    /// </summary>
    /// <exception cref="GraphException">No such node or slot, a value of another shape than its slot's, or a slot left
    /// without a value that the node needs.</exception>
    public Graph WithWeights(string node, IReadOnlyDictionary<string, DoubleTensor> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var id = IdOf(node);
        var current = this[id];
        var slots = current.WeightSlots;
        var merged = slots.Where(s => s.Value is not null).ToDictionary(s => s.Name, s => s.Value!);
        foreach (var (name, value) in values)
        {
            if (slots.All(s => s.Name != name))
                throw new GraphException(new Diagnostic("unknown weight slot", current.Name, current.Describe(),
                    slots.Count == 0 ? "this node holds no weights" : $"use one of its slots: {string.Join(", ", slots.Select(s => s.Name))}",
                    Received: name));
            merged[name] = value ?? throw new ArgumentNullException(nameof(values), $"the value for slot '{name}' is null");
        }
        var missing = slots.Where(s => s.Draw is not WeightDraw.None && !merged.ContainsKey(s.Name)).Select(s => s.Name).ToList();
        if (missing.Count > 0)
            throw new GraphException(new Diagnostic("missing weight", current.Name, current.Describe(),
                $"the node has no value yet for {string.Join(", ", missing)}: set those slots in the same call, or initialise the graph first (InitializeWeights.Run)"));
        return WithNode(id, current.WithWeights(merged));
    }

    /// <summary>The same graph with each node mapped; returns this instance when no node changes.</summary>
    public Graph MapNodes(Func<Node, Node> map)
    {
        ArgumentNullException.ThrowIfNull(map);
        var mapped = Nodes.Select(map).ToArray();
        return mapped.Where((n, i) => !ReferenceEquals(n, Nodes[i])).Any() ? Create(mapped, Outputs) : this;
    }

    /// True when both graphs have equal nodes (weights included, compared by value) and the same outputs;
    /// warnings follow from the nodes and are not compared.
    public bool Equals(Graph? other) =>
        other is not null && (ReferenceEquals(this, other) || (Nodes.Equals(other.Nodes) && Outputs.Equals(other.Outputs)));

    /// True when <paramref name="obj"/> is a <see cref="Graph"/> equal to this one (see <see cref="Equals(Graph)"/>).
    public override bool Equals(object? obj) => obj is Graph other && Equals(other);

    /// A hash of the nodes and outputs, consistent with <see cref="Equals(Graph)"/>.
    public override int GetHashCode() => HashCode.Combine(Nodes, Outputs);

    /// <summary>A table of nodes, kinds, output shapes and parameter counts, with totals, then the warnings.</summary>
    public string Summary() => ParameterCounts.Summary(this);

    /// <summary>One line a node: index, path, description, inferred shape, sources; outputs marked.</summary>
    public override string ToString()
    {
        var text = new StringBuilder();
        var nameWidth = Nodes.Max(n => n.Name.Length);
        var kindWidth = Nodes.Max(n => n.Describe().Length);
        for (int i = 0; i < Nodes.Count; i++)
        {
            var node = Nodes[i];
            var from = node.Sources.Count == 0 ? "" : " <- " + string.Join(", ", node.Sources.Select(s => Nodes[s.Index].Name));
            var output = Outputs.Contains(new NodeId(i)) ? "  (output)" : "";
            text.AppendLine($"{i,3} {node.Name.PadRight(nameWidth)}  {node.Describe().PadRight(kindWidth)}  {Diagnostic.Sequence(Widths[i]),-18}{from}{output}");
        }
        return text.ToString();
    }
}
