using Duality.Ir;

namespace Duality.Passes;

/// <summary>One gated-RNN layer recognised as attention: the node that now stands for it and its shape.</summary>
public sealed record RaisedAttention(string Node, int Heads, int KeyWidth, int ValueWidth, int RecurrentNeurons);

/// <summary>The raised graph, a report per raised layer, and why other recurrences were not raised.</summary>
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
/// </summary>
public static class RaiseAttention
{
    private const double Zero = 1e-12;

    public static Raising Run(Graph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var consumers = Consumers(graph);
        var layers = new List<(Layer Layer, Attention Attention)>();
        var refused = new List<Diagnostic>();
        foreach (var recurrence in graph.Nodes.OfType<LinearRecurrence>())
        {
            var (layer, why) = MatchEither(graph, graph.IdOf(recurrence.Name), consumers);
            if (layer is null)
            {
                refused.Add(new Diagnostic("not raised", recurrence.Name, recurrence.Describe(), why.Hint, Received: why.Reason));
                continue;
            }
            var (attention, problem) = Recover(layer);
            if (attention is null) refused.Add(new Diagnostic("not raised", recurrence.Name, recurrence.Describe(), problem.Hint, Received: problem.Reason));
            else layers.Add((layer, attention));
        }
        // the query recurrence of a raised split layer is part of it, not a layer refused
        var inside = layers.SelectMany(l => l.Layer.Interior).Select(n => graph[n].Name).ToHashSet();
        refused.RemoveAll(r => inside.Contains(r.NodePath));
        if (layers.Count == 0) return new Raising(graph, [], refused);
        var removed = layers.SelectMany(l => l.Layer.Interior).ToHashSet();
        var replacing = layers.ToDictionary(l => l.Layer.Readout, l => l.Attention);
        var emitter = new GraphEmitter(graph, nameof(RaiseAttention));
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            var id = new NodeId(i);
            if (removed.Contains(id)) continue;
            if (replacing.TryGetValue(id, out var attention))
            {
                emitter.Release(attention.Name);
                emitter.Replace(id, emitter.Add(attention with { Source = emitter.Mapped(attention.Source) }));
            }
            else emitter.Copy(id);
        }
        var reports = layers.Select(l => new RaisedAttention(l.Attention.Name, l.Attention.Heads, l.Attention.KeyWidth,
            l.Attention.ValueWidth, l.Layer.Neurons)).ToList();
        return new Raising(emitter.Build(), reports, refused);
    }

    /// <summary>
    /// A gated-RNN layer's nodes. Interior lists input value, input key, input gate, Recurrence, output value, output
    /// query, output gate, then (with <see cref="Decay"/>) the nodes splitting and joining the state.
    /// </summary>
    internal sealed record Layer(NodeId Source, Projection InputValue, Projection InputKey, Gate Input, LinearRecurrence Recurrence,
        Projection OutputValue, Projection OutputQuery, NodeId Readout, Projection ReadoutNode, IReadOnlyList<NodeId> Interior,
        SplitByDecay? Decay = null)
    {
        /// <summary>Recurrent neurons: the input gate's width.</summary>
        public int Neurons => (Decay?.Memory.Width ?? 0) + Recurrence.Width;

        /// <summary>
        /// Each neuron's eigenvalue (re, im): the neurons with an input-dependent decay come first, 1 standing in for
        /// their eigenvalue, then those of Recurrence.
        /// </summary>
        public (double Re, double Im)[] Eigenvalues()
        {
            var (lambda, complex) = (Recurrence.Lambda!, Recurrence.State == StateKind.Complex);
            return [.. Enumerable.Repeat((1.0, 0.0), Decay?.Memory.Width ?? 0),
                .. Enumerable.Range(0, Recurrence.Width).Select(i => complex ? (lambda[i, 0], lambda[i, 1]) : (lambda[i], 0.0))];
        }
    }

    /// <summary>
    /// The state of a lowered attention with an input-dependent decay: the input gate's first Memory.Width neurons
    /// recur in <see cref="Memory"/>, whose decay is sigmoid of <see cref="Projection"/> (of the layer's input),
    /// the others in the layer's Recurrence (fixed eigenvalues), and a Concat joins them in that order.
    /// </summary>
    internal sealed record SplitByDecay(LinearRecurrence Memory, Projection Projection, NodeId ProjectionNode);

    internal readonly record struct Why(string Reason, string Hint);

    /// <summary>
    /// Every gated-RNN layer of the paper's form in the graph (whatever its weights), also, with
    /// <paramref name="withInputDependentDecay"/>, the split form LowerAttention builds for an input-dependent decay.
    /// </summary>
    internal static IEnumerable<Layer> Layers(Graph graph, bool withInputDependentDecay = false)
    {
        var consumers = Consumers(graph);
        foreach (var recurrence in graph.Nodes.OfType<LinearRecurrence>())
            if ((recurrence.Decay is null || withInputDependentDecay)
                && MatchEither(graph, graph.IdOf(recurrence.Name), consumers).Item1 is { } layer)
                yield return layer;
    }

    /// <summary>The layer around a recurrence: the paper's form for fixed eigenvalues, the split form for an input-dependent decay.</summary>
    private static (Layer?, Why) MatchEither(Graph g, NodeId recurrenceId, int[] consumers) =>
        ((LinearRecurrence)g[recurrenceId]).Decay is null ? Match(g, recurrenceId, consumers)
        : MatchSplit(g, recurrenceId, consumers) is { } split ? (split, default) : (null, SplitShape);

    /// <summary>How many nodes read each node, a graph output counting as a reader.</summary>
    internal static int[] Consumers(Graph graph)
    {
        var consumers = new int[graph.Nodes.Count];
        foreach (var node in graph.Nodes) foreach (var s in node.Sources) consumers[s.Index]++;
        foreach (var o in graph.Outputs) consumers[o.Index]++;
        return consumers;
    }

    private static readonly Why Shape = new(
        "the recurrence is not the middle of input gate (two projections of one sequence) -> recurrence -> output gate (two bias-free projections of it) -> bias-free readout, each read only by the next",
        "write the layer in exactly that shape (as LowerAttention does) to raise it");

    private static readonly Why SplitShape = new(
        "its decay is input-dependent, and the layer is not the split form LowerAttention builds: input gate -> Slice [0, m) -> this recurrence (decay sigmoid(P x)) and Slice [m, n) -> a recurrence of fixed eigenvalues, joined by a Concat, then output gate and readout",
        "write the layer in exactly that shape (as LowerAttention does) to raise it");

    internal static (Layer?, Why) Match(Graph g, NodeId recurrenceId, int[] consumers)
    {
        var recurrence = (LinearRecurrence)g[recurrenceId];
        if (recurrence.Lambda is null || recurrence.InitialState is not null
            || (recurrence.State == StateKind.Complex && recurrence.Readout != ComplexReadout.RealPart))
            return (null, new("its eigenvalues are unknown, its initial state is not zero, or it reads out [re; im]",
                "give lambda values, a zero initial state and a real-part readout"));
        if (g[recurrence.Source] is not Gate || consumers[recurrence.Source.Index] != 1)
            return (null, Shape);
        return Ends(g, recurrence.Source, recurrence, recurrenceId, consumers) is { } layer ? (layer, default) : (null, Shape);
    }

    /// <summary>
    /// The split form of an input-dependent decay, anchored on its memory recurrence: input gate -> Slice [0, m) ->
    /// recurrence with decay sigmoid(P x), and Slice [m, n) -> recurrence with fixed real eigenvalues, joined by a
    /// Concat in that order, which the output gate reads; null for anything else.
    /// </summary>
    private static Layer? MatchSplit(Graph g, NodeId memoryId, int[] consumers)
    {
        var memory = (LinearRecurrence)g[memoryId];
        if (memory.State != StateKind.Real || memory.InitialState is not null || consumers[memoryId.Index] != 1
            || g[memory.Decay!.Value] is not Projection decay || consumers[memory.Decay.Value.Index] != 1
            || (decay.OutFeatures != memory.Width && decay.OutFeatures != 1)
            || g[memory.Source] is not Slice { Start: 0 } memorySlice || consumers[memory.Source.Index] != 1
            || g[memorySlice.Source] is not Gate || consumers[memorySlice.Source.Index] != 2)
            return null;
        var nodes = g.Nodes.Select((n, i) => (Node: n, Id: new NodeId(i))).ToList();
        var querySlice = nodes.FirstOrDefault(p => p.Node is Slice s && s.Source == memorySlice.Source && p.Id != memory.Source);
        if (querySlice.Node is not Slice { } slice || slice.Start != memory.Width || consumers[querySlice.Id.Index] != 1) return null;
        var query = nodes.FirstOrDefault(p => p.Node.Sources.Contains(querySlice.Id));
        if (query.Node is not LinearRecurrence { State: StateKind.Real, Decay: null, InitialState: null } recurrence
            || recurrence.Lambda is null || consumers[query.Id.Index] != 1)
            return null;
        var state = nodes.FirstOrDefault(p => p.Node is Concat c && c.Parts.Count == 2 && c.Parts[0] == memoryId && c.Parts[1] == query.Id);
        if (state.Node is null || Ends(g, memorySlice.Source, recurrence, state.Id, consumers) is not { } layer
            || decay.Source != layer.Source || layer.InputValue.OutFeatures != memory.Width + recurrence.Width)
            return null;
        return layer with
        {
            Interior = [.. layer.Interior, memory.Source, querySlice.Id, memory.Decay.Value, memoryId, state.Id],
            Decay = new SplitByDecay(memory, decay, memory.Decay.Value),
        };
    }

    /// <summary>
    /// The layer around its state: the input gate <paramref name="inputId"/> (two projections of one sequence) and the
    /// node holding the state, read by an output gate of two bias-free projections and a bias-free readout, each read only by the next.
    /// </summary>
    private static Layer? Ends(Graph g, NodeId inputId, LinearRecurrence recurrence, NodeId stateId, int[] consumers)
    {
        var input = (Gate)g[inputId];
        if (g[input.Value] is not Projection inputValue || g[input.Gating] is not Projection inputKey
            || inputValue.Source != inputKey.Source || consumers[input.Value.Index] != 1 || consumers[input.Gating.Index] != 1
            || input.Value == input.Gating)
            return null;
        var readers = g.Nodes.Select((n, i) => (n, Id: new NodeId(i))).Where(p => p.n.Sources.Contains(stateId)).ToList();
        if (readers.Count != 2 || consumers[stateId.Index] != 2) return null;
        var gate = g.Nodes.Select((n, i) => (n, Id: new NodeId(i)))
            .FirstOrDefault(p => p.n is Gate gt && (gt.Value == readers[0].Id && gt.Gating == readers[1].Id || gt.Value == readers[1].Id && gt.Gating == readers[0].Id));
        if (gate.n is not Gate output || output.Activation != ActivationKind.Identity
            || g[output.Value] is not Projection { Bias: false } outputValue || g[output.Gating] is not Projection { Bias: false } outputQuery
            || consumers[output.Value.Index] != 1 || consumers[output.Gating.Index] != 1 || consumers[gate.Id.Index] != 1)
            return null;
        var readout = g.Nodes.Select((n, i) => (n, Id: new NodeId(i))).First(p => p.n.Sources.Contains(gate.Id));
        if (readout.n is not Projection { Bias: false } readoutNode) return null;
        NodeId[] interior = [input.Value, input.Gating, inputId, g.IdOf(recurrence.Name), output.Value, output.Gating, gate.Id];
        return new Layer(inputValue.Source, inputValue, inputKey, input, recurrence, outputValue, outputQuery, readout.Id, readoutNode, interior);
    }

    /// <summary>
    /// A head of key and value width 1 for one (output neuron, memory neuron) pair, vectors normalised, its output column
    /// Weight times the output neuron's Column (shared by its pairs, so formed only when needed); Decay: the class of
    /// the memory neuron's decay row (-1 for a fixed eigenvalue).
    /// </summary>
    private sealed record PairHead(double[] Value, double[] Key, double[] Query, double[] Column, double Weight, int Decay)
    {
        public double[] Out() => Column.Select(w => w * Weight).ToArray();

        public void AddTo(double[] sum)
        {
            for (int o = 0; o < sum.Length; o++) sum[o] += Weight * Column[o];
        }

        public bool Reads => Weight != 0 && Column.Any(w => w != 0);
    }

    /// <summary>The causal linear attention computing the same function as the layer, or null when it has none.</summary>
    internal static Attention? Raise(Layer layer) => Recover(layer).Item1;

    private static (Attention?, Why) Recover(Layer layer)
    {
        if (NonFinite(layer) is { } node)
            return (null, new($"{node} holds a NaN or infinite weight", "fix the weights (a diverged training run?) before raising"));
        int n = layer.Neurons, d = layer.InputValue.InFeatures, decayed = layer.Decay?.Memory.Width ?? 0;
        var lambdas = layer.Eigenvalues();
        var isQuery = lambdas.Select(l => Math.Abs(l.Re) <= Zero && Math.Abs(l.Im) <= Zero).ToArray();
        var memory = Enumerable.Range(0, n).Where(i => !isQuery[i]).ToArray();
        if (memory.Length == 0) return (null, new("no neuron has a non-zero eigenvalue, so nothing is remembered", "this layer is feed-forward"));
        if (decayed > 0 && memory.Any(i => i >= decayed))
            return (null, new("neurons of fixed non-zero eigenvalue sit beside neurons with an input-dependent decay; one attention has one kind of decay",
                "give the neurons after the decayed ones eigenvalue 0 (queries)"));
        var gamma = lambdas[memory[0]];
        if (memory.Any(i => Math.Abs(lambdas[i].Re - gamma.Re) > 1e-9 || Math.Abs(lambdas[i].Im - gamma.Im) > 1e-9))
            return (null, new("memory neurons have different eigenvalues; one attention has one decay", "split the layer by eigenvalue"));
        var (decayRows, decayOf) = DecayClasses(layer, n);
        var magnitude = Math.Sqrt(gamma.Re * gamma.Re + gamma.Im * gamma.Im);
        var phase = Math.Atan2(gamma.Im, gamma.Re);
        if (magnitude > 1 + 1e-12)
            return (null, new($"the memory eigenvalue has modulus {magnitude}, larger than 1", "attention decays need |lambda| <= 1"));
        var phi = layer.Input.Activation;
        double[] Row(Projection p, int i) => Enumerable.Range(0, d).Select(c => p.Weights!.Weight[i, c]).ToArray();
        double Bias(Projection p, int i) => p.Weights!.Bias is { } b ? b[i] : 0;
        bool IsZero(double[] v) => v.All(x => Math.Abs(x) <= Zero);
        // query neurons: h = scale * phi(row . x), a constant factor times a bias-free one (phi on the gating side only)
        var query = new (double[] Row, double Scale)[n];
        foreach (var i in Enumerable.Range(0, n).Where(i => isQuery[i]))
        {
            var (value, valueBias, key, keyBias) = (Row(layer.InputValue, i), Bias(layer.InputValue, i), Row(layer.InputKey, i), Bias(layer.InputKey, i));
            if (IsZero(value) && Math.Abs(keyBias) <= Zero) query[i] = (key, valueBias);
            else if (phi == ActivationKind.Identity && IsZero(key) && Math.Abs(valueBias) <= Zero) query[i] = (value, keyBias);
            else return (null, new($"query neuron {i} (lambda = 0) is not a constant times a bias-free projection", "give one factor only a bias and the other none"));
        }
        foreach (var i in memory)
            if (Math.Abs(Bias(layer.InputValue, i)) > Zero || Math.Abs(Bias(layer.InputKey, i)) > Zero)
                return (null, new($"memory neuron {i} has a bias in its input gate; attention has no constant term", "remove the biases of memory neurons"));
        var pairs = new List<PairHead>();
        var (bg, bx, readout) = (layer.OutputValue.Weights!.Weight.Data, layer.OutputQuery.Weights!.Weight.Data, layer.ReadoutNode.Weights!.Weight);
        int outputs = layer.ReadoutNode.OutFeatures;
        bool insidePhi = phi != ActivationKind.Identity;
        // vectors are made unit vectors, their scales moved to the output column (keys and queries inside a feature map
        // keep theirs); each memory neuron's factors once, whichever output neurons read it
        var factors = new (double[] Value, double[] Key, double Scale)?[n];
        (double[] Value, double[] Key, double Scale) Factors(int k)
        {
            if (factors[k] is { } known) return known;
            var (v, sv) = Unit(Row(layer.InputValue, k));
            var (key, sk) = insidePhi ? (Row(layer.InputKey, k), 1.0) : Unit(Row(layer.InputKey, k));
            return (factors[k] = (v, key, sv * sk)).Value;
        }
        var memoryNeurons = new List<int>();
        var queryNeurons = new List<int>();
        for (int m = 0; m < layer.OutputValue.OutFeatures; m++)
        {
            // one output factor reads only memory neurons (lambda != 0), the other only query neurons (lambda = 0)
            bool gOnMemory = false, gOnQuery = false, xOnMemory = false, xOnQuery = false;
            for (int k = 0, at = m * n; k < n; k++, at++)
            {
                if (Math.Abs(bg[at]) > Zero) (gOnQuery, gOnMemory) = (gOnQuery || isQuery[k], gOnMemory || !isQuery[k]);
                if (Math.Abs(bx[at]) > Zero) (xOnQuery, xOnMemory) = (xOnQuery || isQuery[k], xOnMemory || !isQuery[k]);
            }
            var (memoryRow, queryRow) = !gOnQuery && !xOnMemory ? (bg, bx)
                : !gOnMemory && !xOnQuery ? (bx, bg)
                : (null, null);
            if (memoryRow is null || queryRow is null)
                return (null, new($"output neuron {m} does not multiply memory neurons by query neurons", "let one output factor read only lambda != 0 neurons and the other only lambda = 0 neurons"));
            memoryNeurons.Clear();
            queryNeurons.Clear();
            for (int k = 0, at = m * n; k < n; k++, at++)
            {
                if (Math.Abs(memoryRow[at]) > Zero && !isQuery[k]) memoryNeurons.Add(k);
                if (Math.Abs(queryRow[at]) > Zero) queryNeurons.Add(k);
            }
            if (insidePhi && queryNeurons.Count > 1)
                return (null, new($"output neuron {m} mixes several query neurons under a feature map", "select one query neuron per output neuron"));
            var q = new double[d];
            var factor = 1.0;
            if (!insidePhi)
                foreach (var k in queryNeurons) for (int c = 0; c < d; c++) q[c] += queryRow[m * n + k] * query[k].Scale * query[k].Row[c];
            else if (queryNeurons.Count == 1) (q, factor) = (query[queryNeurons[0]].Row, queryRow[m * n + queryNeurons[0]] * query[queryNeurons[0]].Scale);
            var (unitQuery, queryScale) = insidePhi ? (q, 1.0) : Unit(q);
            var column = Enumerable.Range(0, outputs).Select(o => readout[o, m] * factor * queryScale).ToArray();
            foreach (var k in memoryNeurons)
            {
                var (value, key, scale) = Factors(k);
                var weight = memoryRow[m * n + k] * scale;
                pairs.Add(new PairHead(value, key, unitQuery, column, weight, decayOf[k]));
            }
        }
        var heads = Merge(pairs.Where(p => p.Reads).ToList(), swappable: phi == ActivationKind.Identity);
        if (heads.Count == 0) heads = [new Head([new double[d]], [new double[d]], [new double[d]], new double[outputs, 1], decayRows.Count > 0 ? 0 : -1)];
        return (Build(layer, heads, d, outputs, phi, magnitude, phase, decayRows), default);
    }

    /// <summary>The first node of the layer with a NaN or infinite weight, or null.</summary>
    private static string? NonFinite(Layer layer)
    {
        Projection?[] projections = [layer.InputValue, layer.InputKey, layer.OutputValue, layer.OutputQuery, layer.ReadoutNode, layer.Decay?.Projection];
        foreach (var p in projections.OfType<Projection>())
            if (p.Weights is { } w && (!w.Weight.IsFinite || w.Bias is { IsFinite: false })) return p.Name;
        return layer.Recurrence.Lambda is { IsFinite: false } ? layer.Recurrence.Name : null;
    }

    /// <summary>The distinct rows [P | p] of an input-dependent decay, and per neuron the one it reads (-1: a fixed eigenvalue).</summary>
    private static (List<double[]> Rows, int[] Of) DecayClasses(Layer layer, int neurons)
    {
        var of = Enumerable.Repeat(-1, neurons).ToArray();
        if (layer.Decay is not { } split) return ([], of);
        var w = split.Projection.Weights!;
        int d = split.Projection.InFeatures;
        var classes = new VectorClasses();
        for (int i = 0; i < split.Memory.Width; i++)
        {
            var row = split.Projection.OutFeatures == 1 ? 0 : i;
            of[i] = classes.Of([.. Enumerable.Range(0, d).Select(c => w.Weight[row, c]), w.Bias is { } b ? b[row] : 0]);
        }
        return (Enumerable.Range(0, classes.Count).Select(c => classes[c]).ToList(), of);
    }

    /// <summary>v / s with s the norm, signed so the largest entry is positive.</summary>
    private static (double[], double) Unit(double[] v)
    {
        var norm = Math.Sqrt(v.Sum(x => x * x));
        if (norm == 0) return (v, 0);
        var largest = v.MaxBy(Math.Abs);
        var scale = largest < 0 ? -norm : norm;
        return (v.Select(x => x / scale).ToArray(), scale);
    }

    /// <summary>Equal up to rounding: every difference within 1e-11 of the larger vector's largest entry.</summary>
    private static bool Same(double[] a, double[] b)
    {
        double scale = 0, difference = 0;
        for (int i = 0; i < a.Length; i++)
        {
            scale = Math.Max(scale, Math.Max(Math.Abs(a[i]), Math.Abs(b[i])));
            difference = Math.Max(difference, Math.Abs(a[i] - b[i]));
        }
        return difference <= 1e-11 * scale;
    }

    /// <summary>A head: values and their output columns; keys paired with queries.</summary>
    private sealed record Head(List<double[]> Values, List<double[]> Keys, List<double[]> Queries, double[,] Out, int Decay);

    private static List<Head> Merge(List<PairHead> pairs, bool swappable)
    {
        // every vector of every pair as a class of vectors equal up to rounding, so pairs compare by number
        var classes = new VectorClasses();
        var (keyOf, valueOf, queryOf) = (new int[pairs.Count], new int[pairs.Count], new int[pairs.Count]);
        for (int i = 0; i < pairs.Count; i++)
            (keyOf[i], valueOf[i], queryOf[i]) = (classes.Of(pairs[i].Key), classes.Of(pairs[i].Value), classes.Of(pairs[i].Query));
        // how many pairs hold a class as key or value: the rarer candidate is tried first as a group's key
        var holders = new int[classes.Count];
        for (int i = 0; i < pairs.Count; i++)
        {
            holders[keyOf[i]]++;
            if (valueOf[i] != keyOf[i]) holders[valueOf[i]]++;
        }
        // pairs sharing a query: find the factor common to all (the key); the other factors are values
        // (pairs whose memory neurons decay by different rows never share a head)
        var groups = new List<(double[] Key, double[] Query, List<(int Class, double[] Value, double[] Out)> Values, int Decay)>();
        foreach (var byQuery in Enumerable.Range(0, pairs.Count).GroupBy(i => (Query: queryOf[i], pairs[i].Decay)))
        {
            var members = byQuery.ToList();
            var first = members[0];
            int[] candidates = swappable ? [keyOf[first], valueOf[first]] : [keyOf[first]];
            int? key = candidates.OrderBy(c => holders[c])
                .Select(c => (int?)c)
                .FirstOrDefault(c => members.All(i => keyOf[i] == c || (swappable && valueOf[i] == c)));
            if (key is null)
            {
                foreach (var i in members) groups.Add((pairs[i].Key, pairs[i].Query, [(valueOf[i], pairs[i].Value, pairs[i].Out())], byQuery.Key.Decay));
                continue;
            }
            var values = new List<(int Class, double[] Value, double[] Out)>();
            foreach (var i in members)
            {
                var (value, valueClass) = keyOf[i] == key ? (pairs[i].Value, valueOf[i]) : (pairs[i].Key, keyOf[i]);
                var existing = values.FindIndex(v => v.Class == valueClass);
                if (existing < 0) values.Add((valueClass, value, pairs[i].Out()));
                else pairs[i].AddTo(values[existing].Out);
            }
            values = values.OrderBy(v => string.Join(",", v.Value.Select(x => Math.Round(x, 9)))).ToList();
            var query = classes[byQuery.Key.Query];
            if (swappable)
            {
                // a head's output block is shared by its keys: fold the block's scale into the query
                var largest = values.SelectMany(v => v.Out).MaxBy(Math.Abs);
                if (largest != 0)
                {
                    values = values.Select(v => v with { Out = v.Out.Select(w => w / largest).ToArray() }).ToList();
                    query = query.Select(x => x * largest).ToArray();
                }
            }
            groups.Add((classes[key.Value], query, values, byQuery.Key.Decay));
        }
        // groups with the same values and output columns become one head with several keys
        var heads = new List<(Head Head, int[] Values)>();
        foreach (var group in groups)
        {
            var match = heads.FirstOrDefault(h => h.Head.Decay == group.Decay && h.Values.SequenceEqual(group.Values.Select(v => v.Class))
                && Enumerable.Range(0, group.Values.Count).All(j => Same(Column(h.Head.Out, j), group.Values[j].Out)));
            if (match.Head is not null)
            {
                match.Head.Keys.Add(group.Key);
                match.Head.Queries.Add(group.Query);
                continue;
            }
            var outputs = group.Values[0].Out.Length;
            var block = new double[outputs, group.Values.Count];
            for (int j = 0; j < group.Values.Count; j++) for (int o = 0; o < outputs; o++) block[o, j] = group.Values[j].Out[o];
            heads.Add((new Head(group.Values.Select(v => v.Value).ToList(), [group.Key], [group.Query], block, group.Decay),
                group.Values.Select(v => v.Class).ToArray()));
        }
        return heads.Select(h => h.Head).ToList();
    }

    private static double[] Column(double[,] m, int j) => Enumerable.Range(0, m.GetLength(0)).Select(o => m[o, j]).ToArray();

    /// <summary>
    /// Classes of vectors equal up to rounding (<see cref="Same"/>), numbered in order of first appearance, each
    /// represented by its first vector. Vectors are bucketed by their entries rounded relative to their largest, so
    /// equal vectors are found at once; one not found in its bucket is compared with every class before it opens one.
    /// </summary>
    private sealed class VectorClasses
    {
        private const int SearchedClasses = 4096;

        private readonly List<double[]> representatives = [];
        private readonly Dictionary<long, List<int>> buckets = [];

        public int Count => representatives.Count;

        public double[] this[int id] => representatives[id];

        public int Of(double[] v)
        {
            var bucket = Bucket(v);
            if (buckets.TryGetValue(bucket, out var ids))
                foreach (var id in ids)
                    if (representatives[id].Length == v.Length && Same(representatives[id], v)) return id;
            // (a vector whose rounding straddles a bucket's edge; past a few thousand classes, a new class instead)
            var found = representatives.Count > SearchedClasses ? -1 : representatives.FindIndex(r => r.Length == v.Length && Same(r, v));
            if (found < 0)
            {
                found = representatives.Count;
                representatives.Add(v);
            }
            if (ids is null) buckets[bucket] = ids = [];
            ids.Add(found);
            return found;
        }

        private static long Bucket(double[] v)
        {
            var scale = 0.0;
            foreach (var x in v) scale = Math.Max(scale, Math.Abs(x));
            var hash = new HashCode();
            hash.Add(v.Length);
            foreach (var x in v) hash.Add(scale == 0 ? 0 : Math.Round(x / scale * 1e6));
            return hash.ToHashCode();
        }
    }

    /// <summary>One attention node; heads padded with zero rows to a common key and value width.</summary>
    private static Attention Build(Layer layer, List<Head> heads, int d, int outputs, ActivationKind phi, double magnitude, double phase,
        List<double[]> decayRows)
    {
        int count = heads.Count, dk = heads.Max(h => h.Keys.Count), dv = heads.Max(h => h.Values.Count);
        var (wq, wk, wv, wo) = (new double[count * dk, d], new double[count * dk, d], new double[count * dv, d], new double[outputs, count * dv]);
        for (int h = 0; h < count; h++)
        {
            for (int j = 0; j < heads[h].Keys.Count; j++)
                for (int c = 0; c < d; c++) (wq[h * dk + j, c], wk[h * dk + j, c]) = (heads[h].Queries[j][c], heads[h].Keys[j][c]);
            for (int i = 0; i < heads[h].Values.Count; i++)
            {
                for (int c = 0; c < d; c++) wv[h * dv + i, c] = heads[h].Values[i][c];
                for (int o = 0; o < outputs; o++) wo[o, h * dv + i] = heads[h].Out[o, i];
            }
        }
        var weights = new AttentionWeights(DoubleTensor.Matrix(wq), DoubleTensor.Matrix(wk), DoubleTensor.Matrix(wv), DoubleTensor.Matrix(wo));
        if (decayRows.Count > 0)
        {
            // each head decays by its memory neurons' row: sigmoid(w_h . x + b_h)
            var (wd, bd) = (new double[count, d], new double[count]);
            for (int h = 0; h < count; h++)
            {
                var row = decayRows[heads[h].Decay];
                for (int c = 0; c < d; c++) wd[h, c] = row[c];
                bd[h] = row[d];
            }
            return new Attention(layer.ReadoutNode.Name, layer.Source, d, count, dk, dv, Causal: true, AttentionKernel.Linear, phi,
                null, outputs, weights with { DecayWeight = DoubleTensor.Matrix(wd), DecayBias = DoubleTensor.Vector(bd) }, InputDependentDecay: true);
        }
        var decay = Math.Abs(magnitude - 1) <= 1e-12 && Math.Abs(phase) <= 1e-12 ? (double?)null : magnitude;
        var rotation = Math.Abs(phase) <= 1e-12 ? (double?)null : phase;
        return new Attention(layer.ReadoutNode.Name, layer.Source, d, count, dk, dv, Causal: true, AttentionKernel.Linear, phi,
            decay, outputs, weights, rotation);
    }
}
