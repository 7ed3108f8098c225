using Duality.Ir;

namespace Duality.Passes;

/// <summary>A gated linear attention found in a graph: the attention (its sources the graph's ids), the nodes it replaces, its readout.</summary>
internal sealed record RecognisedGatedAttention(GatedLinearAttention Attention, IReadOnlyList<NodeId> Interior, NodeId Readout, int Neurons);

/// <summary>
/// The inverse of <see cref="GatedAttentionConstruction"/>: around a recurrence, the exact node structure it emits
/// (keys_queries -> input gate [-> e^(input gate)] -> recurrence(s) -> output gate -> readout [-> NormalisedReadout]),
/// each node read only by the next, read back as the <see cref="GatedLinearAttention"/> it was built from. Heads and
/// widths follow from the branches' widths and the neurons; gamma_h from the fixed eigenvalues, or as the double whose
/// log is the decay's bias. Every fixed weight is then compared exactly with the construction's for that attention,
/// so anything but a lowered gated attention (other weights, other wiring) is not recognised, whatever its names.
/// Per-head decays of all ones without a log-decay branch read back as none (the same function).
/// </summary>
internal static class GatedAttentionRecognition
{
    /// <summary>The gated attention whose memory recurrence is <paramref name="memoryId"/>, or null.</summary>
    public static RecognisedGatedAttention? Around(Graph g, NodeId memoryId, int[] readers)
    {
        if (g[memoryId] is not LinearRecurrence memory || !Plain(memory)) return null;
        var interior = new List<NodeId> { memoryId };
        bool ReadOnce(NodeId id, int count = 1) => readers[id.Index] == count;
        NodeId input, state;
        Projection? decay = null;
        LinearRecurrence? query = null;
        if (memory.Decay is { } decayId)
        {
            if (memory.DecayForm != DecayForm.Logarithm || g[decayId] is not Projection p || !ReadOnce(decayId) || !ReadOnce(memoryId)
                || g[memory.Source] is not Slice { Start: 0 } memorySlice || !ReadOnce(memory.Source))
                return null;
            decay = p;
            input = memorySlice.Source;
            var querySlice = Find(g, n => n is Slice s && s.Source == input && s.Start == memory.Width);
            if (querySlice is not { } qs || !ReadOnce(qs) || !ReadOnce(input, 2)) return null;
            var queryId = Find(g, n => n is LinearRecurrence r && r.Source == qs);
            if (queryId is not { } qid || g[qid] is not LinearRecurrence { Decay: null } q || !Plain(q) || !ReadOnce(qid)) return null;
            query = q;
            var stateId = Find(g, n => n is Concat c && c.Parts.Count == 2 && c.Parts[0] == memoryId && c.Parts[1] == qid);
            if (stateId is not { } sid) return null;
            state = sid;
            interior.AddRange([decayId, memory.Source, qs, qid, sid]);
        }
        else (input, state) = (memory.Source, memoryId);
        if (g[input] is not Gate inputGate || !ReadOnce(input, decay is null ? 1 : 2)) return null;
        interior.Add(input);
        NodeId? logInputGate = null;
        Projection? gateProjection = null;
        var product = inputGate;
        if (inputGate.Activation == ActivationKind.Exp)
        {
            if (g[inputGate.Value] is not Gate inner || g[inputGate.Gating] is not Projection { Bias: false } gp
                || !ReadOnce(inputGate.Value) || !ReadOnce(inputGate.Gating))
                return null;
            (product, gateProjection, logInputGate) = (inner, gp, gp.Source);
            interior.AddRange([inputGate.Value, inputGate.Gating]);
        }
        if (product.Activation != ActivationKind.Identity || g[product.Value] is not Projection { Bias: true } inputValue
            || g[product.Gating] is not Projection { Bias: false } inputKey || !ReadOnce(product.Value) || !ReadOnce(product.Gating)
            || g[inputKey.Source] is not Concat { Parts.Count: 2 } keysQueries || !ReadOnce(inputKey.Source))
            return null;
        interior.AddRange([product.Value, product.Gating, inputKey.Source]);
        var (key, queries, value) = (keysQueries.Parts[0], keysQueries.Parts[1], inputValue.Source);
        // the output gate: two bias-free projections of the state, their product, one readout or two and a NormalisedReadout
        var stateReaders = ReadersOf(g, state);
        if (stateReaders.Count != 2 || !ReadOnce(state, 2)) return null;
        var outputId = Find(g, n => n is Gate { Activation: ActivationKind.Identity } o && o.Value == stateReaders[0] && o.Gating == stateReaders[1]);
        if (outputId is not { } oid || g[stateReaders[0]] is not Projection { Bias: false } outputValue
            || g[stateReaders[1]] is not Projection { Bias: false } outputQuery || !ReadOnce(stateReaders[0]) || !ReadOnce(stateReaders[1]))
            return null;
        interior.AddRange([stateReaders[0], stateReaders[1], oid]);
        var outputReaders = ReadersOf(g, oid);
        NodeId readout;
        Projection values;
        Projection? normaliser = null;
        int heads;
        if (outputReaders.Count == 1 && ReadOnce(oid) && g[outputReaders[0]] is Projection { Bias: false } only)
            (readout, values, heads) = (outputReaders[0], only, 0);
        else if (outputReaders.Count == 2 && ReadOnce(oid, 2) && ReadOnce(outputReaders[0]) && ReadOnce(outputReaders[1])
                 && Find(g, n => n is NormalisedReadout r && r.Value == outputReaders[0] && r.Normaliser == outputReaders[1]) is { } rid
                 && g[outputReaders[0]] is Projection { Bias: false } v && g[outputReaders[1]] is Projection { Bias: false } nq)
        {
            (readout, values, normaliser, heads) = (rid, v, nq, ((NormalisedReadout)g[rid]).Heads);
            interior.AddRange(outputReaders);
        }
        else return null;
        // heads and widths: width(k) = H d_k, width(v) = H d_v, N = H d_k (d_v + 1) (+ H d_k normalised)
        int keys = g.WidthOf(key), valueWidth = g.WidthOf(value), n = inputValue.OutFeatures;
        if (keys == 0 || g.WidthOf(queries) != keys || n % keys != 0) return null;
        if (normaliser is null)
        {
            var dv = n / keys - 1;
            if (dv <= 0 || valueWidth % dv != 0) return null;
            heads = valueWidth / dv;
        }
        if (heads <= 0 || keys % heads != 0 || valueWidth % heads != 0) return null;
        var attention = new GatedLinearAttention(g[readout].Name, queries, key, value, heads, keys / heads, valueWidth / heads,
            decay?.Source, logInputGate, normaliser is not null, null);
        var stored = (int)GatedAttentionConstruction.Stored(attention);
        if (GatedAttentionConstruction.Neurons(attention) != n || decay is not null && (decay.InFeatures != heads && decay.InFeatures != keys)) return null;
        var gammas = decay is null ? FixedGammas(memory, attention) : decay.Weights?.Bias is { } bias ? LogGammas(bias, attention) : null;
        if (gammas is { Length: 0 }) return null;
        attention = attention with { HeadDecays = gammas is null ? null : DoubleTensor.Vector(gammas) };
        var layout = new GatedAttentionConstruction.Layout(attention, decay?.InFeatures ?? 0);
        var exact =
            Is(inputValue, layout.InputValue(), layout.InputValueBias()) && Is(inputKey, layout.InputKey(), null)
            && (gateProjection is null || Is(gateProjection, layout.InputGate(), null))
            && (decay is null
                ? Equal(memory.Lambda, DoubleTensor.Vector(layout.Lambda()))
                : memory.Width == stored && Is(decay, layout.Decay(), gammas is null ? null : layout.DecayBias())
                  && Equal(query!.Lambda, DoubleTensor.Vector(new double[n - stored])))
            && Is(outputValue, layout.OutputValue(), null) && Is(outputQuery, layout.OutputQuery(), null)
            && Is(values, layout.Readout(), null) && (normaliser is null || Is(normaliser, layout.NormaliserReadout(), null));
        return exact ? new RecognisedGatedAttention(attention, interior, readout, n) : null;
    }

    /// <summary>A real recurrence of fixed eigenvalues or a decay branch, zero initial state, plain input.</summary>
    private static bool Plain(LinearRecurrence r) =>
        r is { State: StateKind.Real, InitialState: null, ComplexInput: false, NormalisedInput: false, TrainableLambda: false };

    /// <summary>gamma_h from the eigenvalue of head h's first stored neuron; null when all are 1; empty when one is not a decay.</summary>
    private static double[]? FixedGammas(LinearRecurrence memory, GatedLinearAttention a)
    {
        if (memory.Lambda is not { Shape.Count: 1 } lambda || lambda.Shape[0] != GatedAttentionConstruction.Neurons(a)) return [];
        var gammas = Enumerable.Range(0, a.Heads).Select(h => lambda[h * a.ValueWidth * a.KeyWidth]).ToArray();
        if (gammas.Any(g => !(g > 0 && g <= 1))) return [];
        return gammas.All(g => g == 1) ? null : gammas;
    }

    /// <summary>gamma_h as the double in (0, 1] whose log is head h's decay bias (the nearest to its exponential), or empty.</summary>
    private static double[] LogGammas(DoubleTensor bias, GatedLinearAttention a)
    {
        if (bias.Shape.Count != 1 || bias.Shape[0] != GatedAttentionConstruction.Stored(a)) return [];
        var gammas = new double[a.Heads];
        for (int h = 0; h < a.Heads; h++)
        {
            var log = bias[h * a.ValueWidth * a.KeyWidth];
            var guess = Math.Exp(log);
            double[] near = [guess, Math.BitDecrement(guess), Math.BitIncrement(guess), Math.BitDecrement(Math.BitDecrement(guess)), Math.BitIncrement(Math.BitIncrement(guess))];
            var found = near.Where(g => g > 0 && g <= 1 && Math.Log(g) == log).Take(1).ToArray();
            if (found.Length == 0) return [];
            gammas[h] = found[0];
        }
        return gammas;
    }

    private static bool Is(Projection p, double[,] weight, double[]? bias) =>
        p.Weights is { } w && Equal(w.Weight, DoubleTensor.Matrix(weight)) && Equal(w.Bias, bias is null ? null : DoubleTensor.Vector(bias))
        && p.Bias == (bias is not null);

    private static bool Equal(DoubleTensor? a, DoubleTensor? b) =>
        a is null ? b is null : b is not null && a.Shape.SequenceEqual(b.Shape) && a.Data.SequenceEqual(b.Data);

    private static NodeId? Find(Graph g, Func<Node, bool> match)
    {
        for (int i = 0; i < g.Nodes.Count; i++)
            if (match(g.Nodes[i])) return new NodeId(i);
        return null;
    }

    private static List<NodeId> ReadersOf(Graph g, NodeId id) =>
        Enumerable.Range(0, g.Nodes.Count).Where(i => g.Nodes[i].Sources.Contains(id)).Select(i => new NodeId(i)).ToList();
}
