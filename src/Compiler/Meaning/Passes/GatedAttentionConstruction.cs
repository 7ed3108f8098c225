using Duality.Ir;

namespace Duality.Passes;

/// <summary>
/// The gated RNN that computes a <see cref="GatedLinearAttention"/> exactly, built from its branches q, k, v, l, g
/// with fixed selection weights (0/1, and log gamma_h biases). Per head h, i &lt; d_v, j &lt; d_k:
///
///   memory neuron (h, i, j):   u = v[h, i] * k[h, j] * e^(g_h),  lambda_t = gamma_h e^(l_t[h or (h, j)])
///   normaliser neuron (h, j):  u = 1 * k[h, j] * e^(g_h),        lambda_t as above        (Normalised only)
///   query neuron (h, j):       u = 1 * q[h, j],                  lambda = 0
///   output neurons:            memory (h, i, j) * query (h, j), normaliser (h, j) * query (h, j)
///   y[h, i] = sum_j outputs (h, i, j)   (divided by max(|sum_j normaliser outputs (h, j)|, 1) when Normalised)
///
/// so the memory neurons hold S_t[j, i] and the normaliser neurons n_t[j]. Nodes, under the attention's name:
///   keys_queries = [k; q],  input_value = A_v v + a_v,  input_key = A_k [k; q],  input = input_value * input_key,
///   gated_input = input * e^(A_g g)                                        (with a log input gate)
///   memory = the recurrence of the stored neurons, its decay A_l l + log gamma (with a log-decay branch: memory
///   and query recurrences over Slices of the input, joined by the Concat state; otherwise one recurrence, lambda fixed),
///   output_value = B_v h,  output_query = B_q h,  output = their product,
///   name = D output, or name = NormalisedReadout(values = D output, normaliser = E output).
/// There is one construction (<see cref="Construction.Full"/>'s layout): q and k are separate branches, so the
/// compressed construction, which stores x x^T of one input, does not apply; every construction asked for builds this one.
/// </summary>
internal static class GatedAttentionConstruction
{
    /// <summary>H (d_k d_v + d_k), plus H d_k normaliser neurons when normalised.</summary>
    public static long Neurons(GatedLinearAttention a) => Stored(a) + (long)a.Heads * a.KeyWidth;

    /// <summary>The neurons that decay: H d_k d_v memory neurons and the H d_k normaliser neurons; also the output neurons.</summary>
    public static long Stored(GatedLinearAttention a) => (long)a.Heads * a.KeyWidth * (a.ValueWidth + (a.Normalised ? 1 : 0));

    /// <summary>
    /// With N neurons, M stored, widths H d_k, H d_v and a log-decay of w features:
    ///   N (H d_v + 1) input values + 2 H d_k N input keys [+ H N input gates] [+ M (w + 1 if gammas) decays]
    ///   + 2 M N output gates + H d_v M readout [+ H M normaliser readout]; fixed eigenvalues count none.
    /// </summary>
    public static long Parameters(GatedLinearAttention a, int decayWidth)
    {
        long n = Neurons(a), m = Stored(a), heads = a.Heads, keys = heads * a.KeyWidth, values = heads * a.ValueWidth;
        var gate = a.LogInputGate is null ? 0 : heads * n;
        var decay = a.LogDecay is null ? 0 : m * (decayWidth + (a.HeadDecays is null ? 0 : 1));
        return n * (values + 1) + 2 * keys * n + gate + decay + 2 * m * n + values * m + (a.Normalised ? heads * m : 0);
    }

    /// <summary>Why <paramref name="a"/> has no gated-RNN form here (its weight tensors too large), or null.</summary>
    public static Diagnostic? Refusal(GatedLinearAttention a)
    {
        long n = Neurons(a), widest = Math.Max(2L * a.Heads * a.KeyWidth, (long)a.Heads * a.ValueWidth);
        if (n * Math.Max(n, widest) <= int.MaxValue) return null;
        return new Diagnostic("not lowered", a.Name, a.Describe(),
            "keep this node as gated linear attention, or use fewer heads or smaller key and value widths",
            Received: $"its gated RNN would have {n:N0} recurrent neurons, and its weight tensors would exceed 2^31 - 1 elements");
    }

    /// <summary>Emits the gated RNN of <paramref name="a"/> (its sources already mapped); the last node takes its name.</summary>
    /// <paramref name="decayWidth"/> is the log-decay branch's width (H or H d_k; 0 without one).
    public static (NodeId, LoweredAttention) Emit(GraphEmitter emitter, GatedLinearAttention a, int decayWidth)
    {
        var layout = new Layout(a, decayWidth);
        emitter.Release(a.Name);
        var built = new List<string>();
        NodeId Add(Node node)
        {
            built.Add(node.Name);
            return emitter.Add(node);
        }
        string Name(string part) => emitter.Fresh($"{a.Name}/{part}");
        int n = layout.Neurons, m = layout.Stored, keys = a.Heads * a.KeyWidth, values = a.Heads * a.ValueWidth;
        var keysQueries = Add(new Concat(Name("keys_queries"), ValueList.Of(a.Key, a.Query)));
        var inputValue = Add(new Projection(Name("input_value"), a.Value, values, n, true,
            new ProjectionWeights(DoubleTensor.Matrix(layout.InputValue()), DoubleTensor.Vector(layout.InputValueBias()))));
        var inputKey = Add(new Projection(Name("input_key"), keysQueries, 2 * keys, n, false,
            new ProjectionWeights(DoubleTensor.Matrix(layout.InputKey()), null)));
        var input = Add(new Gate(Name("input"), inputValue, inputKey));
        if (a.LogInputGate is { } g)
        {
            var logGate = Add(new Projection(Name("input_gate"), g, a.Heads, n, false, new ProjectionWeights(DoubleTensor.Matrix(layout.InputGate()), null)));
            input = Add(new Gate(Name("gated_input"), input, logGate, ActivationKind.Exp));
        }
        NodeId state;
        if (a.LogDecay is { } logDecay)
        {
            var memoryInput = Add(new Slice(Name("memory_input"), input, 0, m));
            var decay = Add(new Projection(Name("decay"), logDecay, layout.DecayWidth, m, a.HeadDecays is not null,
                new ProjectionWeights(DoubleTensor.Matrix(layout.Decay()), a.HeadDecays is null ? null : DoubleTensor.Vector(layout.DecayBias()))));
            var memory = Add(new LinearRecurrence(Name("memory"), memoryInput, m, TrainableLambda: false, Decay: decay, DecayForm: DecayForm.Logarithm));
            var queryInput = Add(new Slice(Name("query_input"), input, m, n - m));
            var query = Add(new LinearRecurrence(Name("query"), queryInput, n - m, TrainableLambda: false, Lambda: DoubleTensor.Vector(new double[n - m])));
            state = Add(new Concat(Name("state"), ValueList.Of(memory, query)));
        }
        else state = Add(new LinearRecurrence(Name("memory"), input, n, TrainableLambda: false, Lambda: DoubleTensor.Vector(layout.Lambda())));
        var outputValue = Add(new Projection(Name("output_value"), state, n, m, false, new ProjectionWeights(DoubleTensor.Matrix(layout.OutputValue()), null)));
        var outputQuery = Add(new Projection(Name("output_query"), state, n, m, false, new ProjectionWeights(DoubleTensor.Matrix(layout.OutputQuery()), null)));
        var output = Add(new Gate(Name("output"), outputValue, outputQuery));
        NodeId readout;
        if (a.Normalised)
        {
            var mixed = Add(new Projection(Name("values"), output, m, values, false, new ProjectionWeights(DoubleTensor.Matrix(layout.Readout()), null)));
            var normaliser = Add(new Projection(Name("normaliser"), output, m, a.Heads, false,
                new ProjectionWeights(DoubleTensor.Matrix(layout.NormaliserReadout()), null)));
            readout = Add(new NormalisedReadout(a.Name, mixed, normaliser, a.Heads));
        }
        else readout = Add(new Projection(a.Name, output, m, values, false, new ProjectionWeights(DoubleTensor.Matrix(layout.Readout()), null)));
        var parameters = built.Sum(name => ParameterCounts.Of(emitter.NodeNamed(name)));
        return (readout, new LoweredAttention(a.Name, Construction.Full, n, m, parameters, n, Parameters(a, layout.DecayWidth), built));
    }

    /// <summary>
    /// The neuron layout and the fixed weights of each node: memory neuron (h, i, j) at h d_v d_k + i d_k + j, normaliser
    /// neuron (h, j) at H d_k d_v + h d_k + j, query neuron (h, j) at Stored + h d_k + j.
    /// </summary>
    internal sealed class Layout(GatedLinearAttention a, int decayWidth)
    {
        private readonly int heads = a.Heads, dk = a.KeyWidth, dv = a.ValueWidth;

        public int DecayWidth => decayWidth;

        public int Memory => heads * dv * dk;

        public int Stored => (int)GatedAttentionConstruction.Stored(a);

        public int Neurons => (int)GatedAttentionConstruction.Neurons(a);

        private int MemoryNeuron(int h, int i, int j) => h * dv * dk + i * dk + j;

        private int NormaliserNeuron(int h, int j) => Memory + h * dk + j;

        private int QueryNeuron(int h, int j) => Stored + h * dk + j;

        /// <summary>Every stored neuron with its head and key channel.</summary>
        private IEnumerable<(int Neuron, int Head, int Key)> StoredNeurons()
        {
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < dv; i++)
                    for (int j = 0; j < dk; j++)
                        yield return (MemoryNeuron(h, i, j), h, j);
            if (a.Normalised)
                for (int h = 0; h < heads; h++)
                    for (int j = 0; j < dk; j++)
                        yield return (NormaliserNeuron(h, j), h, j);
        }

        /// <summary>Memory neuron (h, i, j) reads v[h, i]; normaliser and query neurons read none (their bias is 1).</summary>
        public double[,] InputValue()
        {
            var w = new double[Neurons, heads * dv];
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < dv; i++)
                    for (int j = 0; j < dk; j++)
                        w[MemoryNeuron(h, i, j), h * dv + i] = 1;
            return w;
        }

        public double[] InputValueBias() => Enumerable.Range(0, Neurons).Select(r => r < Memory ? 0.0 : 1.0).ToArray();

        /// <summary>Stored neurons read k[h, j] (the first H d_k features), query neurons q[h, j] (the last).</summary>
        public double[,] InputKey()
        {
            var w = new double[Neurons, 2 * heads * dk];
            foreach (var (neuron, h, j) in StoredNeurons()) w[neuron, h * dk + j] = 1;
            for (int h = 0; h < heads; h++)
                for (int j = 0; j < dk; j++)
                    w[QueryNeuron(h, j), heads * dk + h * dk + j] = 1;
            return w;
        }

        /// <summary>Stored neurons read their head's log input gate; query neurons none (e^0 = 1).</summary>
        public double[,] InputGate()
        {
            var w = new double[Neurons, heads];
            foreach (var (neuron, h, _) in StoredNeurons()) w[neuron, h] = 1;
            return w;
        }

        /// <summary>Stored neurons read their head's log-decay, or their key channel's.</summary>
        public double[,] Decay()
        {
            var w = new double[Stored, decayWidth];
            foreach (var (neuron, h, j) in StoredNeurons()) w[neuron, decayWidth == heads ? h : h * dk + j] = 1;
            return w;
        }

        public double[] DecayBias()
        {
            var bias = new double[Stored];
            foreach (var (neuron, h, _) in StoredNeurons()) bias[neuron] = Math.Log(a.HeadDecays![h]);
            return bias;
        }

        /// <summary>gamma_h (or 1) on stored neurons, 0 on query neurons: the eigenvalues without a log-decay branch.</summary>
        public double[] Lambda()
        {
            var lambda = new double[Neurons];
            foreach (var (neuron, h, _) in StoredNeurons()) lambda[neuron] = a.HeadDecays is { } gammas ? gammas[h] : 1;
            return lambda;
        }

        /// <summary>Output neuron r reads stored neuron r.</summary>
        public double[,] OutputValue()
        {
            var w = new double[Stored, Neurons];
            for (int r = 0; r < Stored; r++) w[r, r] = 1;
            return w;
        }

        /// <summary>Output neuron r reads the query neuron of its head and key channel.</summary>
        public double[,] OutputQuery()
        {
            var w = new double[Stored, Neurons];
            foreach (var (neuron, h, j) in StoredNeurons()) w[neuron, QueryNeuron(h, j)] = 1;
            return w;
        }

        /// <summary>y[h, i] sums the output neurons (h, i, j) over j.</summary>
        public double[,] Readout()
        {
            var w = new double[heads * dv, Stored];
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < dv; i++)
                    for (int j = 0; j < dk; j++)
                        w[h * dv + i, MemoryNeuron(h, i, j)] = 1;
            return w;
        }

        /// <summary>n . q of head h sums the normaliser output neurons (h, j) over j.</summary>
        public double[,] NormaliserReadout()
        {
            var w = new double[heads, Stored];
            for (int h = 0; h < heads; h++)
                for (int j = 0; j < dk; j++)
                    w[h, NormaliserNeuron(h, j)] = 1;
            return w;
        }
    }
}
