using Duality.Ir;

namespace Duality.Passes;

/// <summary>What happened to one attention node.</summary>
/// <param name="Node">The attention's path, now the readout's.</param>
/// <param name="Construction">The construction built (never Smallest).</param>
/// <param name="RecurrentNeurons">The neurons of the recurrence (memory and query neurons).</param>
/// <param name="OutputNeurons">The neurons of the output gate.</param>
/// <param name="Parameters">The parameters of the new nodes.</param>
/// <param name="FormulaNeurons">The recurrent neurons the construction's formula gives (<see cref="Construction"/>).</param>
/// <param name="FormulaParameters">The parameters the construction's formula gives.</param>
/// <param name="NewNodes">The paths of the nodes built, in order, the readout last.</param>
public sealed record LoweredAttention(string Node, Construction Construction, int RecurrentNeurons, int OutputNeurons,
    long Parameters, int FormulaNeurons, long FormulaParameters, IReadOnlyList<string> NewNodes);

/// <summary>The lowered graph, a report per lowered attention, and why the others were left alone.</summary>
/// <param name="Graph">The graph with every lowered attention replaced (the input graph when none was).</param>
/// <param name="Lowered">One report per lowered attention, in graph order.</param>
/// <param name="Refused">One diagnostic per attention left as it is, saying why.</param>
public sealed record Lowering(Graph Graph, IReadOnlyList<LoweredAttention> Lowered, IReadOnlyList<Diagnostic> Refused);

/// <summary>
/// Rewrites every causal linear attention with known weights into the gated RNN of paper.md:
///
///   y_t = W_O [ sum_{s&lt;=t} w(t,s) v_s (phi(k_s) . phi(q_t)) ]_heads
///     ==>
///   u = (A_g x + a_g) * phi(A_x x + a_x)                    input gate      (name/input_value, name/input_key, name/input)
///   h_t = lambda * h_{t-1} + u_t                            recurrence      (name/memory)
///   y = D ((B_g h) * (B_x h))                               output gate, readout (name/output_value, name/output_query, name/output, name)
///
/// lambda is gamma (or 1) on memory neurons and 0 on query neurons; gamma e^(i theta) for a rotating
/// decay (complex state, real part read out); for an input-dependent decay the memory neurons form
/// a recurrence whose decay branch is sigmoid(w_h . x + b_h) and the query neurons one with lambda = 0.
/// The last node takes the attention's name, so whatever read the attention reads the RNN.
/// A <see cref="GatedLinearAttention"/> becomes the gated RNN of <see cref="GatedAttentionConstruction"/> over its branches
/// (always the full construction's layout, whatever construction is asked for; its report says Full).
/// Softmax, non-causal and weightless attention, a feature map under the compressed construction, and layers too large
/// for one tensor are left as they are, each with a diagnostic saying why (<see cref="Lowering.Refused"/>).
/// Returns the same instance when nothing is lowered.
/// </summary>
public static class LowerAttention
{
    /// Lowers every causal linear attention of <paramref name="graph"/> that has weights into the gated RNN of the
    /// chosen <paramref name="construction"/>; the result computes the same function (to rounding).
    /// <exception cref="ArgumentNullException"><paramref name="graph"/> is null.</exception>
    public static Lowering Run(Graph graph, Construction construction = Construction.Smallest)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var refusals = new Dictionary<string, Diagnostic?>();
        foreach (var node in graph.Nodes)
            if (node is Attention a) refusals[a.Name] = Refusal(a, construction);
            else if (node is GatedLinearAttention gated) refusals[gated.Name] = Refusal(gated);
        var refused = refusals.Values.OfType<Diagnostic>().ToList();
        if (refused.Count == refusals.Count) return new Lowering(graph, [], refused);
        var emitter = new GraphEmitter(graph, nameof(LowerAttention));
        var reports = new List<LoweredAttention>();
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            var id = new NodeId(i);
            if (graph[id] is Attention a && refusals[a.Name] is null)
            {
                var (output, report) = Emit(emitter, a with { Source = emitter.Mapped(a.Source) }, construction);
                emitter.Replace(id, output);
                reports.Add(report);
            }
            else if (graph[id] is GatedLinearAttention gated && refusals[gated.Name] is null)
            {
                var decayWidth = gated.LogDecay is { } decay ? graph.Widths[decay.Index] : 0;
                var (output, report) = GatedAttentionConstruction.Emit(emitter, (GatedLinearAttention)gated.MapSources(emitter.Mapped), decayWidth);
                emitter.Replace(id, output);
                reports.Add(report);
            }
            else emitter.Copy(id);
        }
        return new Lowering(emitter.Build(), reports, refused);
    }

    /// <summary>The whole graph as a gated RNN; throws a <see cref="GraphException"/> if any attention cannot be lowered exactly.</summary>
    public static Graph ToGatedRnn(Graph graph, Construction construction = Construction.Smallest)
    {
        var lowering = Run(graph, construction);
        return lowering.Refused.Count == 0 ? lowering.Graph : throw new GraphException(lowering.Refused);
    }

    /// <summary>Why an attention node has no exact gated-RNN form here, or null when it has one.</summary>
    public static Diagnostic? Refusal(Attention a) => Refusal(a, Construction.Smallest);

    /// <summary>Why an attention node has no exact gated-RNN form in <paramref name="construction"/>, or null when it has one.</summary>
    public static Diagnostic? Refusal(Attention a, Construction construction)
    {
        if (a.Kernel == AttentionKernel.Softmax)
            return Refuse(a, "softmax attention has no exact recurrent form: exp and the normalising division are not polynomial in the inputs",
                "use linear attention (a feature map such as elu+1 keeps scores positive), or keep this node as attention");
        if (!a.Causal)
            return Refuse(a, "non-causal attention reads future steps, which a causal recurrence cannot see",
                "make the attention causal, or keep this node as attention");
        if (a.Weights is null)
            return Refuse(a, "the RNN's weights are computed from the attention's, and this node carries none",
                "compile and read the weights back (model.ToGraph()), or run InitializeWeights.Run(graph, seed) first");
        if (construction == Construction.Compressed && a.FeatureMap != ActivationKind.Identity)
            return Refuse(a, "the compressed construction stores x x^T, which phi(k) q products are not linear in",
                "use Construction.Full (or Smallest) for attention with a feature map");
        var neurons = Math.Min(AttentionConstructions.FullNeurons(a),
            construction == Construction.Full || a.FeatureMap != ActivationKind.Identity ? long.MaxValue : AttentionConstructions.CompressedNeurons(a));
        var largest = neurons * Math.Max(a.InFeatures, a.OutputWidth);
        if (largest > int.MaxValue || neurons * neurons > (long)int.MaxValue)
            return Refuse(a, $"its gated RNN would have {neurons:N0} recurrent neurons, and its weight tensors would exceed 2^31 - 1 elements",
                "keep this node as attention, or use fewer heads or smaller key and value widths");
        return null;
    }

    /// <summary>Why a gated linear attention has no exact gated-RNN form here (its weight tensors too large), or null when it has one.</summary>
    public static Diagnostic? Refusal(GatedLinearAttention a)
    {
        ArgumentNullException.ThrowIfNull(a);
        return GatedAttentionConstruction.Refusal(a);
    }

    private static Diagnostic Refuse(Attention a, string why, string hint) =>
        new("not lowered", a.Name, a.Describe(), hint, Received: why);

    private static (NodeId, LoweredAttention) Emit(GraphEmitter emitter, Attention a, Construction construction)
    {
        var chosen = Choose(a, construction);
        var layer = chosen == Construction.Compressed ? AttentionConstructions.Compressed(a) : AttentionConstructions.Full(a);
        emitter.Release(a.Name);
        var first = emitter.Fresh(a.Name + "/input_value");
        var before = new List<string>();
        NodeId Add(Node node)
        {
            before.Add(node.Name);
            return emitter.Add(node);
        }
        string Name(string part) => emitter.Fresh($"{a.Name}/{part}");
        int d = a.InFeatures, n = layer.Neurons, m = layer.OutputNeurons, memory = layer.MemoryNeurons;
        var inputValue = Add(new Projection(first, a.Source, d, n, true,
            new ProjectionWeights(DoubleTensor.Matrix(layer.InputValue), DoubleTensor.Vector(layer.InputValueBias))));
        var inputKey = Add(new Projection(Name("input_key"), a.Source, d, n, true,
            new ProjectionWeights(DoubleTensor.Matrix(layer.InputKey), DoubleTensor.Vector(layer.InputKeyBias))));
        var input = Add(new Gate(Name("input"), inputValue, inputKey, layer.FeatureMap));
        NodeId state;
        if (layer.DecayRows is { } rows)
        {
            var memoryInput = Add(new Slice(Name("memory_input"), input, 0, memory));
            var decay = Add(new Projection(Name("decay"), a.Source, d, memory, true,
                new ProjectionWeights(DoubleTensor.Matrix(rows), DoubleTensor.Vector(layer.DecayBias!))));
            var memoryState = Add(new LinearRecurrence(Name("memory"), memoryInput, memory, TrainableLambda: false, Decay: decay));
            var queryInput = Add(new Slice(Name("query_input"), input, memory, n - memory));
            var queryState = Add(new LinearRecurrence(Name("query"), queryInput, n - memory, TrainableLambda: false,
                Lambda: DoubleTensor.Vector(new double[n - memory])));
            state = Add(new Concat(Name("state"), ValueList.Of(memoryState, queryState)));
        }
        else state = Add(new LinearRecurrence(Name("memory"), input, n, a.DecayPhase is null ? StateKind.Real : StateKind.Complex,
            ComplexReadout.RealPart, TrainableLambda: true, Lambda: Eigenvalues(a, memory, n)));
        var outputValue = Add(new Projection(Name("output_value"), state, n, m, false,
            new ProjectionWeights(DoubleTensor.Matrix(layer.OutputValue), null)));
        var outputQuery = Add(new Projection(Name("output_query"), state, n, m, false,
            new ProjectionWeights(DoubleTensor.Matrix(layer.OutputQuery), null)));
        var product = Add(new Gate(Name("output"), outputValue, outputQuery));
        var readout = Add(new Projection(a.Name, product, m, a.OutputWidth, false, new ProjectionWeights(DoubleTensor.Matrix(layer.Readout), null)));
        var formula = AttentionConstructions.Parameters(a, chosen);
        var formulaNeurons = (int)(chosen == Construction.Compressed ? AttentionConstructions.CompressedNeurons(a) : AttentionConstructions.FullNeurons(a));
        var parameters = before.Sum(name => ParameterCounts.Of(emitter.NodeNamed(name)));
        return (readout, new LoweredAttention(a.Name, chosen, n, m, parameters, formulaNeurons, formula, before));
    }

    private static Construction Choose(Attention a, Construction wanted) => wanted switch
    {
        // fewer neurons, then fewer parameters; full when both tie
        Construction.Smallest => a.FeatureMap == ActivationKind.Identity
                                 && (AttentionConstructions.CompressedNeurons(a), AttentionConstructions.Parameters(a, Construction.Compressed))
                                    .CompareTo((AttentionConstructions.FullNeurons(a), AttentionConstructions.Parameters(a, Construction.Full))) < 0
            ? Construction.Compressed
            : Construction.Full,
        _ => wanted,
    };

    /// <summary>gamma (or 1, or its head's gamma_h) on memory neurons, 0 on query neurons; as (re, im) pairs for a rotating decay.</summary>
    private static DoubleTensor Eigenvalues(Attention a, int memory, int n)
    {
        var gamma = a.Decay ?? 1.0;
        // both constructions give every head the same number of memory neurons, in head order
        double Memory(int i) => a.HeadDecays is { } decays ? decays[i / (memory / a.Heads)] : gamma;
        if (a.DecayPhase is not { } theta)
            return DoubleTensor.Vector(Enumerable.Range(0, n).Select(i => i < memory ? Memory(i) : 0.0).ToArray());
        var values = new double[2 * n];
        for (int i = 0; i < memory; i++) (values[2 * i], values[2 * i + 1]) = (gamma * Math.Cos(theta), gamma * Math.Sin(theta));
        return new DoubleTensor(ValueList.Of(n, 2), values);
    }
}
