namespace Duality.Ir;

/// <summary>
/// The driver of the shape rules: names and sources are checked here, then each kind's own rule
/// (<see cref="Node.InferWidth"/>) gives the width a node produces from the widths it reads, and the
/// problems with its hyper-parameters and weights. A node whose sources already failed reports
/// nothing more, so one mistake gives one diagnostic.
/// </summary>
public static class ShapeRules
{
    /// <summary>The width of <paramref name="self"/>'s output, or null when it has none; problems go to <paramref name="problems"/>.</summary>
    public static int? Infer(Node node, NodeId self, IReadOnlyList<Node> earlier, IReadOnlyList<int?> widths,
        List<Diagnostic> problems)
    {
        var check = new ShapeCheck(node, earlier, problems);
        check.Name();
        foreach (var source in node.Sources)
            if (source.Index < 0 || source.Index >= self.Index || source.Index >= earlier.Count)
                check.Problem("unknown node", $"it reads {source}, which is not an earlier node of this graph",
                    "a node may only read nodes built before it; build the source first");
        if (problems.Count > check.StartCount) return null;
        var sourceWidths = node.Sources.Select(s => widths[s.Index]).ToArray();
        if (sourceWidths.Any(w => w is null)) return null;
        return node.InferWidth(check, id => widths[id.Index]!.Value);
    }
}

/// <summary>The checks shape rules share; each adds a diagnostic naming the node being checked.</summary>
internal sealed class ShapeCheck(Node node, IReadOnlyList<Node> earlier, List<Diagnostic> problems)
{
    public int StartCount { get; } = problems.Count;

    public string NameOf(NodeId id) => id.Index >= 0 && id.Index < earlier.Count ? earlier[id.Index].Name : id.ToString();

    public void Problem(string problem, string detail, string hint) =>
        problems.Add(new Diagnostic(problem, node.Name, node.Describe(), hint, Received: detail));

    public void Mismatch(string problem, string expected, string received, string from, string hint) =>
        problems.Add(new Diagnostic(problem, node.Name, node.Describe(), hint, expected, received, from));

    public bool Require(bool condition, string problem, string detail, string hint)
    {
        if (!condition) Problem(problem, detail, hint);
        return condition;
    }

    public void Name()
    {
        if (string.IsNullOrWhiteSpace(node.Name))
            problems.Add(new Diagnostic("missing name", "(unnamed)", node.Describe(), "give every node a non-empty name"));
        else if (node.Name.Contains('.') || node.Name.Any(char.IsWhiteSpace) || node.Name.StartsWith('/') || node.Name.EndsWith('/'))
            Problem("invalid name", "names are paths of words separated by '/', without '.' or spaces",
                "rename the node, for example 'block1/proj'");
    }

    public bool Positive(int value, string what) =>
        Require(value > 0, "invalid size", $"{what} = {value}", $"give a positive number of {what}");

    public void Input(NodeId source, int expected, int received, string hint)
    {
        if (expected != received)
            Mismatch("shape mismatch", "input " + Diagnostic.Sequence(expected), Diagnostic.Sequence(received), NameOf(source), hint);
    }

    public int? SameWidths(NodeId a, int widthA, NodeId b, int widthB, string hint)
    {
        if (widthA == widthB) return widthA;
        problems.Add(new Diagnostic("shape mismatch", node.Name, node.Describe(), hint,
            $"{Diagnostic.Sequence(widthA)} from '{NameOf(a)}' on both sides",
            Diagnostic.Sequence(widthB), NameOf(b)));
        return null;
    }

    public void Weight(string name, DoubleTensor tensor, params int[] shape)
    {
        if (!tensor.Shape.SequenceEqual(shape))
            Mismatch("weight shape mismatch", $"{name} [{string.Join(", ", shape)}]", $"{name} {tensor.ShapeText}", node.Name,
                $"give {name} the shape [{string.Join(", ", shape)}] or change the node's sizes");
        else if (!tensor.IsFinite)
            Problem("non-finite weight", $"{name} contains NaN or infinity", "replace the weights, or re-initialise them with a seed");
    }
}
