using System.Text;

namespace Duality.Ir;

/// <summary>Whether a diagnostic stops a graph from being built (an error) or is reported beside it (a warning).</summary>
public enum Severity { Error, Warning }

/// <summary>
/// One problem with a graph, located at a node (by its path) and phrased for the person who wrote it:
/// what was expected, what was received and from where, and one hint. Errors are thrown in a
/// <see cref="GraphException"/>; warnings never stop a graph from being built and are kept on it (<see cref="Graph.Warnings"/>).
/// </summary>
public sealed record Diagnostic(string Problem, string NodePath, string NodeDescription, string Hint,
    string? Expected = null, string? Received = null, string? ReceivedFrom = null, Severity Severity = Severity.Error)
{
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
    public GraphException(IReadOnlyList<Diagnostic> diagnostics)
        : base(Render(diagnostics)) => Diagnostics = diagnostics;

    public GraphException(Diagnostic diagnostic) : this([diagnostic]) { }

    public IReadOnlyList<Diagnostic> Diagnostics { get; }

    private static string Render(IReadOnlyList<Diagnostic> diagnostics) =>
        (diagnostics.Count == 1 ? "1 problem in the graph:\n" : $"{diagnostics.Count} problems in the graph:\n")
        + string.Join("\n", diagnostics);
}
