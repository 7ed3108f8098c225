using System.Diagnostics;
using System.Globalization;
using System.Text;
using Duality.Ir;

namespace Duality.Visualization;

/// <summary>
/// Graphviz pictures of graphs: one cluster per graph, side by side. A recurrence's label counts its
/// neurons by eigenvalue, so memory neurons (lambda = 1 or gamma: key-times-value sums) and query
/// neurons (lambda = 0: the current query) can be told apart at a glance.
/// </summary>
public static class Dot
{
    /// A Graphviz DOT text drawing each of <paramref name="graphs"/> as a cluster labelled with its title, left to right,
    /// each node labelled with its path and description; render it with <c>dot -Tsvg</c>.
    public static string Render(params (string Title, Graph Graph)[] graphs)
    {
        var text = new StringBuilder();
        text.AppendLine("digraph duality {");
        text.AppendLine("  rankdir=TB; newrank=true; fontname=\"Helvetica\";");
        text.AppendLine("  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];");
        for (int g = 0; g < graphs.Length; g++)
        {
            var (title, graph) = graphs[g];
            text.AppendLine($"  subgraph cluster_{g} {{");
            text.AppendLine($"    label={Quote(title)}; fontsize=14; style=dashed;");
            for (int i = 0; i < graph.Nodes.Count; i++)
            {
                var node = graph.Nodes[i];
                var output = graph.Outputs.Contains(new NodeId(i)) ? ", penwidth=2" : "";
                text.AppendLine($"    g{g}n{i} [label={Quote(Label(node, graph.Widths[i]))}, fillcolor=\"{Colour(node)}\"{output}];");
            }
            for (int i = 0; i < graph.Nodes.Count; i++)
                foreach (var source in graph.Nodes[i].Sources)
                    text.AppendLine($"    g{g}n{source.Index} -> g{g}n{i};");
            text.AppendLine("  }");
        }
        text.AppendLine("}");
        return text.ToString();
    }

    /// <summary>Writes path.dot and, when Graphviz's dot is on PATH, path.svg; returns the files written.</summary>
    public static IReadOnlyList<string> Write(string pathWithoutExtension, params (string Title, Graph Graph)[] graphs)
    {
        var dotFile = pathWithoutExtension + ".dot";
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(dotFile))!);
        File.WriteAllText(dotFile, Render(graphs));
        var svgFile = pathWithoutExtension + ".svg";
        try
        {
            using var process = Process.Start(new ProcessStartInfo("dot", ["-Tsvg", dotFile, "-o", svgFile])
            {
                RedirectStandardError = true,
                UseShellExecute = false,
            });
            process!.WaitForExit();
            return process.ExitCode == 0 ? [dotFile, svgFile] : [dotFile];
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return [dotFile];
        }
    }

    private static string Label(Node node, int width)
    {
        var label = $"{node.Name}\n{node.Describe()}\n[batch, time, {width}]";
        return node is LinearRecurrence { Lambda: { } lambda } recurrence ? label + "\n" + Eigenvalues(recurrence, lambda) : label;
    }

    /// <summary>"6 x lambda = 1 (accumulates over time)\n2 x lambda = 0 (memoryless: carries the current step)".</summary>
    public static string Eigenvalues(LinearRecurrence recurrence, DoubleTensor lambda)
    {
        var values = Enumerable.Range(0, recurrence.Width).Select(i =>
            recurrence.State == StateKind.Complex ? (lambda[i, 0], lambda[i, 1]) : (lambda[i], 0.0));
        var groups = values.GroupBy(v => (Math.Round(v.Item1, 6), Math.Round(v.Item2, 6))).OrderByDescending(g => g.Count());
        return string.Join("\n", groups.Select(g =>
        {
            var (re, im) = g.Key;
            var value = im == 0 ? re.ToString("0.###", CultureInfo.InvariantCulture)
                                : $"{re.ToString("0.###", CultureInfo.InvariantCulture)}{(im < 0 ? "-" : "+")}{Math.Abs(im).ToString("0.###", CultureInfo.InvariantCulture)}i";
            var role = re == 0 && im == 0 ? " (memoryless: carries the current step)" : " (accumulates over time)";
            return $"{g.Count()} x lambda = {value}{role}";
        }));
    }

    private static string Colour(Node node) => node switch
    {
        Input => "#e8e8e8",
        Attention => "#f4c7a1",
        LinearRecurrence => "#a8d5ba",
        Gate => "#f7e79a",
        Projection => "#c6dcf2",
        _ => "#f2f2f2",
    };

    private static string Quote(string text) => "\"" + text.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n") + "\"";
}
