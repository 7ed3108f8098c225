namespace Duality.Ir;

/// <summary>
/// The driver of the shape rules: names and sources are checked here, then each kind's own rule
/// (<see cref="Node.InferWidth"/>) gives the width a node produces from the widths it reads, and the
/// problems with its hyper-parameters and weights. A node whose sources already failed reports
/// nothing more, so one mistake gives one diagnostic. Warnings (<see cref="Severity.Warning"/>) go to the
/// same list and never make a width null.
/// </summary>
public static class ShapeRules
{
    /// <summary>The width of <paramref name="self"/>'s output, or null when it has none; problems go to <paramref name="problems"/>.</summary>
    public static int? Infer(Node node, NodeId self, IReadOnlyList<Node> earlier, IReadOnlyList<int?> widths,
        List<Diagnostic> problems)
    {
        var check = new ShapeCheck(node, earlier, problems);
        try
        {
            check.Name();
            foreach (var source in node.Sources)
                if (source.Index < 0 || source.Index >= self.Index || source.Index >= earlier.Count)
                    check.Problem("unknown node", $"it reads {source}, which is not an earlier node of this graph",
                        "a node may only read nodes built before it; build the source first");
            if (check.Failed) return null;
            var sourceWidths = node.Sources.Select(s => widths[s.Index]).ToArray();
            if (sourceWidths.Any(w => w is null)) return null;
            return node.InferWidth(check, id => widths[id.Index]!.Value);
        }
        catch (NullReferenceException)
        {
            // a record built with null where the IR expects a list, a tensor or a weights record
            problems.Add(new Diagnostic("missing field", node.Name ?? "(unnamed)", node.GetType().Name,
                "give every field of the node a value (a list, a tensor or a weights record left null)"));
            return null;
        }
    }
}

/// <summary>The checks shape rules share; each adds a diagnostic naming the node being checked.</summary>
internal sealed class ShapeCheck(Node node, IReadOnlyList<Node> earlier, List<Diagnostic> problems)
{
    /// <summary>
    /// The most elements one weight tensor may hold: its elements are indexed by int (arrays, <see cref="DoubleTensor"/>,
    /// the kernels), so 2^31 - 1.
    /// </summary>
    public const long MaxElements = int.MaxValue;

    public int StartCount { get; } = problems.Count;

    /// <summary>True when an error (not a warning) was reported for this node.</summary>
    public bool Failed
    {
        get
        {
            for (int i = StartCount; i < problems.Count; i++)
                if (problems[i].Severity == Severity.Error) return true;
            return false;
        }
    }

    public string NameOf(NodeId id) => id.Index >= 0 && id.Index < earlier.Count ? earlier[id.Index].Name : id.ToString();

    public void Problem(string problem, string detail, string hint) =>
        problems.Add(new Diagnostic(problem, node.Name, node.Describe(), hint, Received: detail));

    /// <summary>A problem that does not stop the graph from being built.</summary>
    public void Warn(string problem, string detail, string hint) =>
        problems.Add(new Diagnostic(problem, node.Name, node.Describe(), hint, Received: detail, Severity: Severity.Warning));

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
        else if (NameProblem(node.Name) is { } why)
            Problem("invalid name", why,
                "rename the node: a path of words made of letters, digits, '_' and '-', separated by single '/', for example 'block1/proj'");
    }

    /// <summary>
    /// Why <paramref name="name"/> is not a node path, or null when it is one: non-empty segments of letters, digits,
    /// '_' and '-', separated by '/'. Parameters are named "path.field", so a '.' would be ambiguous.
    /// </summary>
    public static string? NameProblem(string name)
    {
        if (name.StartsWith('/')) return "the name starts with '/'";
        if (name.EndsWith('/')) return "the name ends with '/'";
        if (name.Contains("//", StringComparison.Ordinal)) return "the name has an empty segment ('//')";
        foreach (var c in name)
            if (c != '/' && c != '_' && c != '-' && !char.IsLetterOrDigit(c))
                return char.IsControl(c) || char.IsWhiteSpace(c) || char.IsSurrogate(c)
                    ? $"the name contains the character U+{(int)c:X4}"
                    : $"the name contains '{c}'";
        return null;
    }

    public bool Positive(int value, string what) =>
        Require(value > 0, "invalid size", $"{what} = {value}", $"give a positive number of {what}");

    /// <summary>
    /// A weight tensor <paramref name="field"/> of the given shape holds at most <see cref="MaxElements"/>; its sizes
    /// are long, so the product never overflows before it is checked.
    /// </summary>
    public bool Elements(string field, params long[] shape)
    {
        Int128 count = 1;
        foreach (var d in shape) count *= d;
        return Require(count <= MaxElements, "invalid size",
            $"{field} [{string.Join(", ", shape)}] would hold {count:N0} elements",
            $"keep every weight tensor under {MaxElements:N0} elements; make the sizes smaller");
    }

    /// <summary>A width the node produces from sizes given as long: at most int.MaxValue features.</summary>
    public bool FeatureWidth(string what, long width) =>
        Require(width <= int.MaxValue, "invalid size", $"{what} = {width:N0} features",
            $"keep widths under {int.MaxValue:N0} features; make the sizes smaller");

    /// <summary>An enum field holds one of its declared values (a cast such as (ActivationKind)99 does not).</summary>
    public bool Defined<T>(T value, string field) where T : struct, Enum =>
        Require(Enum.IsDefined(value), "invalid option", $"{field} = {value}, not a defined {typeof(T).Name}",
            $"use one of {string.Join(", ", Enum.GetNames<T>().Select(n => $"{typeof(T).Name}.{n}"))}");

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

    public void Weight(string name, DoubleTensor? tensor, params int[] shape) => Weight(name, tensor, null, shape);

    /// <summary>As <see cref="Weight(string, DoubleTensor?, int[])"/>, the hint stating how the tensor's rows and columns are laid out.</summary>
    public void Weight(string name, DoubleTensor? tensor, string? layout, params int[] shape)
    {
        if (tensor is null)
            Problem("missing weight", $"{name} is null", $"give {name} the shape [{string.Join(", ", shape)}], or leave the whole weights record out");
        else if (!tensor.Shape.SequenceEqual(shape))
            Mismatch("weight shape mismatch", $"{name} [{string.Join(", ", shape)}]", $"{name} {tensor.ShapeText}", node.Name,
                layout is null ? $"give {name} the shape [{string.Join(", ", shape)}] or change the node's sizes"
                    : $"give {name} the shape [{string.Join(", ", shape)}] ({layout}) or change the node's sizes");
        else if (!tensor.IsFinite)
            Problem("non-finite weight", $"{name} contains NaN or infinity", "replace the weights, or re-initialise them with a seed");
    }
}
