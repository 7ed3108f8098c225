using System.Text;

namespace Duality.Ir;

/// <summary>Trainable scalars per node, from hyper-parameters alone (no weights needed).</summary>
public static class ParameterCounts
{
    /// The trainable scalars of <paramref name="node"/>, from its hyper-parameters (for a projection In*Out, plus Out with a bias).
    public static long Of(Node node) => node.CountParameters();

    /// The sum of <see cref="Of"/> over every node of <paramref name="graph"/>.
    public static long Total(Graph graph) => graph.Nodes.Sum(Of);

    /// <summary>A table: node, kind, output shape, parameters; then the totals and the graph's warnings.</summary>
    public static string Summary(Graph graph)
    {
        var text = new StringBuilder();
        var nameWidth = Math.Max(4, graph.Nodes.Max(n => n.Name.Length));
        var kindWidth = Math.Max(4, graph.Nodes.Max(n => n.Describe().Length));
        text.AppendLine($"{"node".PadRight(nameWidth)}  {"kind".PadRight(kindWidth)}  {"output",-18} {"parameters",10}");
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            var node = graph.Nodes[i];
            var mark = graph.Outputs.Contains(new NodeId(i)) ? "  -> output" : "";
            text.AppendLine($"{node.Name.PadRight(nameWidth)}  {node.Describe().PadRight(kindWidth)}  " +
                            $"{Diagnostic.Sequence(graph.Widths[i]),-18} {Of(node),10:N0}{mark}");
        }
        text.Append($"{graph.Nodes.Count} nodes, {graph.Inputs.Count} input(s), {graph.Outputs.Count} output(s), " +
                    $"{Total(graph):N0} parameters");
        foreach (var warning in graph.Warnings) text.Append('\n').Append(warning);
        return text.ToString();
    }
}
