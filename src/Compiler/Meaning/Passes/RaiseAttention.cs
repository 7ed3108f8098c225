using Duality.Ir;
using Duality.Structure;

namespace Duality.Passes;

/// <summary>One gated-RNN layer recognised as attention: the node that now stands for it and its shape.</summary>
/// <param name="Node">The path of the attention node (the layer's readout's path).</param>
/// <param name="Heads">Its heads.</param>
/// <param name="KeyWidth">Its key width.</param>
/// <param name="ValueWidth">Its value width.</param>
/// <param name="RecurrentNeurons">The recurrent neurons of the layer it replaced.</param>
public sealed record RaisedAttention(string Node, int Heads, int KeyWidth, int ValueWidth, int RecurrentNeurons);

/// <summary>The raised graph, a report per raised layer, and why other recurrences were not raised.</summary>
/// <param name="Graph">The graph with every raised layer replaced (the input graph when none was).</param>
/// <param name="Raised">One report per raised layer, in graph order.</param>
/// <param name="Refused">One diagnostic per recurrence not raised, saying why.</param>
public sealed record Raising(Graph Graph, IReadOnlyList<RaisedAttention> Raised, IReadOnlyList<Diagnostic> Refused);

/// <summary>
/// The reverse of <see cref="LowerAttention"/>: finds gated-RNN layers of the paper's form
///
///   u = (A_g x + a_g) * phi(A_x x + a_x),  h_t = lambda * h_{t-1} + u_t,  y = D ((B_g h) * (B_x h))
///
/// in which neurons with lambda = 0 carry a query (one input factor is a constant), all other
/// neurons share one lambda = gamma e^(i theta) and store bias-free products, and every output
/// neuron multiplies memory neurons by query neurons; and replaces each by an equivalent causal
/// linear attention node:
///
///   y_t = sum_s w(t,s) sum_(m,n) D[:,m] B_g[m,n] (a_n . x_s)(c_n . x_s)(r_m . x_t)
///
/// With an input-dependent decay, the layer is the split form LowerAttention builds: the memory neurons
/// in a recurrence whose decay is sigmoid(P x + p), the query neurons in one with lambda = 0, joined by a
/// Concat; each head then decays by its memory neurons' row of [P | p].
///
/// Each (output neuron, memory neuron) pair is a head with key and value width 1; pairs sharing a
/// key, a query and a decay become one head (values stacked), and heads sharing values, output columns
/// and decay merge their keys and queries. The weights are identified only up to the invariances of
/// paper.md section 6 (permutations, rescalings, swapped gate factors); the function is exact.
///
/// The gated RNN LowerAttention builds for a <see cref="GatedLinearAttention"/> (its branches q, k, v, log-decay and
/// log input gate feeding selection projections, an Exp input gate, a log-form decay, a NormalisedReadout when normalised)
/// is recognised exactly, every fixed weight compared with the construction's (<see cref="GatedAttentionRecognition"/>),
/// and raised to that attention over the same branches.
/// </summary>
public static class RaiseAttention
{
    /// Replaces every gated-RNN layer of <paramref name="graph"/> that computes a causal linear attention by that
    /// attention; the others are listed in <see cref="Raising.Refused"/> with the reason.
    /// <exception cref="ArgumentNullException"><paramref name="graph"/> is null.</exception>
    public static Raising Run(Graph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var readers = GatedLayers.Readers(graph);
        var gated = graph.Nodes.OfType<LinearRecurrence>()
            .Select(r => GatedAttentionRecognition.Around(graph, graph.IdOf(r.Name), readers)).OfType<RecognisedGatedAttention>().ToList();
        var insideGated = gated.SelectMany(l => l.Interior).ToHashSet();
        var layers = new List<(GatedLayer Layer, Attention Attention)>();
        var refused = new List<Diagnostic>();
        foreach (var recurrence in graph.Nodes.OfType<LinearRecurrence>())
        {
            if (insideGated.Contains(graph.IdOf(recurrence.Name))) continue;
            var (layer, why) = GatedLayers.Around(graph, graph.IdOf(recurrence.Name), readers);
            if (layer is null)
            {
                refused.Add(new Diagnostic("not raised", recurrence.Name, recurrence.Describe(), why.Hint, Received: why.Reason));
                continue;
            }
            var (attention, problem) = AttentionForm.Of(layer);
            if (attention is null) refused.Add(new Diagnostic("not raised", recurrence.Name, recurrence.Describe(), problem.Hint, Received: problem.Reason));
            else layers.Add((layer, attention));
        }
        // the query recurrence of a raised split layer is part of it, not a layer refused
        var inside = layers.SelectMany(l => l.Layer.Interior).Select(n => graph[n].Name).ToHashSet();
        refused.RemoveAll(r => inside.Contains(r.NodePath));
        if (layers.Count == 0 && gated.Count == 0) return new Raising(graph, [], refused);
        var removed = layers.SelectMany(l => l.Layer.Interior).Concat(insideGated).ToHashSet();
        var replacing = layers.ToDictionary(l => l.Layer.Ids.Readout, l => (Node)l.Attention);
        foreach (var l in gated) replacing[l.Readout] = l.Attention;
        var emitter = new GraphEmitter(graph, nameof(RaiseAttention));
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            var id = new NodeId(i);
            if (removed.Contains(id)) continue;
            if (replacing.TryGetValue(id, out var attention))
            {
                emitter.Release(attention.Name);
                emitter.Replace(id, emitter.Add(attention.MapSources(emitter.Mapped)));
            }
            else emitter.Copy(id);
        }
        var reports = layers.Select(l => new RaisedAttention(l.Attention.Name, l.Attention.Heads, l.Attention.KeyWidth,
                l.Attention.ValueWidth, l.Layer.Neurons))
            .Concat(gated.Select(l => new RaisedAttention(l.Attention.Name, l.Attention.Heads, l.Attention.KeyWidth, l.Attention.ValueWidth, l.Neurons)))
            .OrderBy(r => graph.IdOf(r.Node).Index).ToList();
        return new Raising(emitter.Build(), reports, refused);
    }
}
