using Duality.Ir;

namespace Duality;

/// <summary>What some uses of a graph require of it, as diagnostics naming each node that falls short.</summary>
internal static class Requirements
{
    /// <summary>Nodes without the concrete weights that <paramref name="user"/> needs ("the reference", "a streamer").</summary>
    public static IEnumerable<Diagnostic> MissingWeights(Graph graph, string user) =>
        graph.Nodes.Where(n => !n.HasWeights)
            .Select(n => new Diagnostic("missing weights", n.Name, n.Describe(),
                $"{user} needs concrete weights: InitializeWeights.Run(graph, seed), or compiled.ToGraph()"));

    /// <summary>Non-causal attention, which a form that runs one step at a time cannot compute.</summary>
    public static IEnumerable<Diagnostic> NonCausalAttention(Graph graph) =>
        graph.Nodes.OfType<Attention>().Where(a => !a.Causal)
            .Select(a => new Diagnostic("no step form", a.Name, a.Describe(),
                "non-causal attention reads future steps; make it causal to stream the graph"));

    public static void Check(IEnumerable<Diagnostic> problems)
    {
        var list = problems.ToList();
        if (list.Count > 0) throw new GraphException(list);
    }
}
