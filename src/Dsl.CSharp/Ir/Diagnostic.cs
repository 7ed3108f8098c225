using System.Text;

namespace Duality.Ir;

/// <summary>Whether a diagnostic stops a graph from being built (an error) or is reported beside it (a warning).</summary>
public enum Severity
{
    /// <summary>The graph is not built; the diagnostic is thrown in a <see cref="GraphException"/>.</summary>
    Error,

    /// <summary>The graph is built and keeps the diagnostic in <see cref="Graph.Warnings"/>.</summary>
    Warning,
}

/// <summary>
/// One problem with a graph, located at a node (by its path) and phrased for the person who wrote it:
/// what was expected, what was received and from where, and one hint. Errors are thrown in a
/// <see cref="GraphException"/>; warnings never stop a graph from being built and are kept on it (<see cref="Graph.Warnings"/>).
/// </summary>
/// <param name="Problem">What is wrong, in a few words ("width mismatch").</param>
/// <param name="NodePath">The path of the node concerned, or "(graph)".</param>
/// <param name="NodeDescription">The node's description ("Projection 8 -> 16").</param>
/// <param name="Hint">One way to fix it.</param>
/// <param name="Expected">The shape or value expected, when there is one.</param>
/// <param name="Received">The shape or value received, when there is one.</param>
/// <param name="ReceivedFrom">The node the received shape came from, when known.</param>
/// <param name="Severity">Error (the default) or warning.</param>
public sealed record Diagnostic(string Problem, string NodePath, string NodeDescription, string Hint,
    string? Expected = null, string? Received = null, string? ReceivedFrom = null, Severity Severity = Severity.Error)
{
    /// The diagnostic as shown to users: "problem at 'path' (description)", then the expected and received shapes
    /// when known (with the node the received shape came from), then "hint: ...". A warning starts with "warning: ".
    public override string ToString()
    {
        var text = new StringBuilder(Severity == Severity.Warning ? "warning: " : "")
            .Append($"{Problem} at '{NodePath}' ({NodeDescription})");
        if (Expected is not null) text.Append($"\n  expected {Expected}");
        if (Received is not null)
            text.Append($"\n  received {(Expected is not null ? "      " : "")}{Received}")
                .Append(ReceivedFrom is not null ? $" from '{ReceivedFrom}'" : "");
        text.Append($"\n  hint: {Hint}");
        return text.ToString();
    }

    /// <summary>"[batch, time, 64]": how shapes are shown to users.</summary>
    public static string Sequence(int features) => $"[batch, time, {features}]";
}

/// <summary>Every problem found in a graph, thrown once at the API boundary.</summary>
public sealed class GraphException : Exception
{
    /// The exception for <paramref name="diagnostics"/>, its message "N problems in the graph:" followed by each one.
    public GraphException(IReadOnlyList<Diagnostic> diagnostics)
        : base(Render(diagnostics)) => Diagnostics = diagnostics;

    /// The exception for one <paramref name="diagnostic"/>.
    public GraphException(Diagnostic diagnostic) : this([diagnostic]) { }

    /// Every problem found, in the order the graph was checked (node by node, then the outputs).
    public IReadOnlyList<Diagnostic> Diagnostics { get; }

    private static string Render(IReadOnlyList<Diagnostic> diagnostics) =>
        (diagnostics.Count == 1 ? "1 problem in the graph:\n" : $"{diagnostics.Count} problems in the graph:\n")
        + string.Join("\n", diagnostics);
}
