using Duality.Ir;

namespace Duality.Reference;

/// <summary>
/// The oracle: every node kind evaluated with explicit loops over batch, time and features in
/// float64, written for obviousness, not speed. Sequences are double[batch, time, features]; each
/// kind's loops are its <see cref="Node.Evaluate"/>, and inputs are fed here.
/// </summary>
public static class ReferenceEvaluator
{
    /// <summary>Inputs in the graph's input order; outputs in its output order. The graph must carry all weights.</summary>
    public static double[][,,] Evaluate(Graph graph, params double[][,,] inputs)
    {
        Requirements.Check(Requirements.MissingWeights(graph, "the reference"));
        if (inputs.Length != graph.Inputs.Count)
            throw new ArgumentException($"the graph has {graph.Inputs.Count} inputs, {inputs.Length} were given");
        var values = new double[graph.Nodes.Count][,,];
        int next = 0;
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            var node = graph.Nodes[i];
            values[i] = node is Input input
                ? CheckInput(input, inputs[next++])
                : node.Evaluate(node.Sources.Select(s => values[s.Index]).ToArray());
        }
        return graph.Outputs.Select(o => values[o.Index]).ToArray();
    }

    /// The outputs by node path, given each input by its node path; sequences are double[batch, time, features].
    /// <exception cref="ArgumentException">An input of the graph is missing from <paramref name="inputs"/>, or has the wrong number of features.</exception>
    /// <exception cref="GraphException">A node carries no weights (initialise them with <c>InitializeWeights.Run</c>).</exception>
    public static IReadOnlyDictionary<string, double[,,]> Evaluate(Graph graph, IReadOnlyDictionary<string, double[,,]> inputs)
    {
        var ordered = graph.InputNodes.Select(n => inputs.TryGetValue(n.Name, out var x)
            ? x : throw new ArgumentException($"no input named '{n.Name}'")).ToArray();
        var outputs = Evaluate(graph, ordered);
        return graph.Outputs.Select((o, i) => (graph[o].Name, outputs[i])).ToDictionary(p => p.Name, p => p.Item2);
    }

    private static double[,,] CheckInput(Input input, double[,,] x) =>
        x.GetLength(2) == input.Features
            ? x
            : throw new ArgumentException($"input '{input.Name}' needs {input.Features} features, got {x.GetLength(2)}");
}
