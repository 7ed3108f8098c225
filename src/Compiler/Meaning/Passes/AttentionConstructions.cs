using Duality.Ir;

namespace Duality.Passes;

/// <summary>Which exact gated-RNN form of a causal linear attention to build.</summary>
public enum Construction
{
    /// <summary>
    /// The one with fewer recurrent neurons, then fewer parameters (full when both tie, and whenever a feature map is
    /// used): on a tie in neurons, never the one with more parameters.
    /// </summary>
    Smallest,

    /// <summary>H (d_k d_v + d_k) recurrent neurons: key-value products S[i, j] and queries.</summary>
    Full,

    /// <summary>H (d (d + 1) / 2 + d) recurrent neurons: the symmetric x x^T triangle and M x (no feature map).</summary>
    Compressed,
}

/// <summary>
/// The weights of the gated RNN layer
///   u = (A_g x + a_g) * phi(A_x x + a_x),   h_t = lambda * h_{t-1} + u_t,   z = (B_g h) * (B_x h),   y = D z
/// that computes a causal linear attention exactly. Neurons [0, MemoryNeurons) hold key-value (or x x^T)
/// sums with lambda = gamma; the rest hold the current query with lambda = 0.
/// </summary>
internal sealed record GatedLayerWeights(
    double[,] InputValue, double[] InputValueBias, double[,] InputKey, double[] InputKeyBias, ActivationKind FeatureMap,
    int MemoryNeurons, int Neurons, double[,] OutputValue, double[,] OutputQuery, double[,] Readout,
    double[,]? DecayRows, double[]? DecayBias)
{
    public int OutputNeurons => OutputValue.GetLength(0);
}

internal static class AttentionConstructions
{
    public static long FullNeurons(Attention a) => (long)a.Heads * ((long)a.KeyWidth * a.ValueWidth + a.KeyWidth);

    public static long CompressedNeurons(Attention a) => (long)a.Heads * ((long)a.InFeatures * (a.InFeatures + 1) / 2 + a.InFeatures);

    /// <summary>
    /// Parameters of the lowered layer with N recurrent neurons, M output neurons and S memory neurons (paper.md):
    ///   2 N (d + 1) input gates + N eigenvalues (2 N complex; none with an input-dependent decay, whose S (d + 1)
    ///   decay weights come instead) + 2 M N output gates + out M readout.
    /// Full: N = H (d_k d_v + d_k), M = S = H d_k d_v; compressed: N = H (d (d + 1) / 2 + d), M = H d_v d, S = H d (d + 1) / 2.
    /// </summary>
    public static long Parameters(Attention a, Construction construction)
    {
        long d = a.InFeatures, heads = a.Heads;
        var (n, m, memory) = construction == Construction.Compressed
            ? (CompressedNeurons(a), heads * a.ValueWidth * d, heads * SymmetricPairs.Count(a.InFeatures))
            : (FullNeurons(a), heads * a.KeyWidth * a.ValueWidth, heads * a.KeyWidth * a.ValueWidth);
        var lambdas = a.InputDependentDecay ? 0 : a.DecayPhase is null ? n : 2L * n;
        var decay = a.InputDependentDecay ? memory * (d + 1) : 0;
        return 2L * n * (d + 1) + lambdas + decay + 2L * m * n + a.OutputWidth * m;
    }

    /// <summary>
    /// Full (paper.md section 3), per head h, i &lt; d_v, j &lt; d_k:
    ///   memory neuron (h, i, j): value branch W_V row (h, i), key branch W_K row (h, j), lambda = gamma
    ///   query neuron (h, j):     value branch the constant 1 (bias), key branch W_Q row (h, j), lambda = 0
    ///   output neuron (h, i, j): memory (h, i, j) times query (h, j); D sums over j, then W_O.
    /// </summary>
    public static GatedLayerWeights Full(Attention a)
    {
        var w = a.Weights!;
        int d = a.InFeatures, heads = a.Heads, dk = a.KeyWidth, dv = a.ValueWidth;
        int memory = heads * dv * dk, n = memory + heads * dk, m = memory;
        var (value, valueBias, key, keyBias) = (new double[n, d], new double[n], new double[n, d], new double[n]);
        var (outputValue, outputQuery) = (new double[m, n], new double[m, n]);
        var mixed = new double[heads * dv, m];
        for (int h = 0; h < heads; h++)
        {
            for (int j = 0; j < dk; j++)
            {
                int query = memory + h * dk + j;
                valueBias[query] = 1;
                CopyRow(w.Query, h * dk + j, key, query);
            }
            for (int i = 0; i < dv; i++)
                for (int j = 0; j < dk; j++)
                {
                    int neuron = h * dv * dk + i * dk + j;
                    CopyRow(w.Value, h * dv + i, value, neuron);
                    CopyRow(w.Key, h * dk + j, key, neuron);
                    outputValue[neuron, neuron] = 1;
                    outputQuery[neuron, memory + h * dk + j] = 1;
                    mixed[h * dv + i, neuron] = 1;
                }
        }
        var (decayRows, decayBias) = DecayPerNeuron(a, memory, neuron => neuron / (dv * dk));
        return new GatedLayerWeights(value, valueBias, key, keyBias, a.FeatureMap, memory, n, outputValue, outputQuery,
            Readout(a, mixed), decayRows, decayBias);
    }

    /// <summary>
    /// Compressed (paper.md section 4), per head h, a &lt;= b &lt; d, i &lt; d_v, with M_h = W_K^h^T W_Q^h:
    ///   memory neuron (h, a, b): x_a x_b (selections), lambda = gamma, so it holds X_t[a, b] = sum_s x_s,a x_s,b
    ///   query neuron (h, b):     the constant 1 times (M_h x)_b, lambda = 0
    ///   output neuron (h, i, b): (W_V^h X_t)[i, b] times (M_h x_t)_b; D sums over b, then W_O.
    /// </summary>
    public static GatedLayerWeights Compressed(Attention a)
    {
        var w = a.Weights!;
        int d = a.InFeatures, heads = a.Heads, dk = a.KeyWidth, dv = a.ValueWidth;
        int triangle = SymmetricPairs.Count(d), memory = heads * triangle, n = memory + heads * d, m = heads * dv * d;
        var (value, valueBias, key, keyBias) = (new double[n, d], new double[n], new double[n, d], new double[n]);
        var (outputValue, outputQuery) = (new double[m, n], new double[m, n]);
        var mixed = new double[heads * dv, m];
        for (int h = 0; h < heads; h++)
        {
            for (int p = 0; p < d; p++)
                for (int q = p; q < d; q++)
                {
                    int neuron = h * triangle + SymmetricPairs.Index(p, q, d);
                    value[neuron, p] = 1;
                    key[neuron, q] = 1;
                }
            for (int b = 0; b < d; b++)
            {
                int query = memory + h * d + b;
                valueBias[query] = 1;
                for (int c = 0; c < d; c++)
                    for (int j = 0; j < dk; j++)
                        key[query, c] += w.Key[h * dk + j, b] * w.Query[h * dk + j, c];
            }
            for (int i = 0; i < dv; i++)
                for (int b = 0; b < d; b++)
                {
                    int output = h * dv * d + i * d + b;
                    for (int p = 0; p < d; p++) outputValue[output, h * triangle + SymmetricPairs.Index(p, b, d)] += w.Value[h * dv + i, p];
                    outputQuery[output, memory + h * d + b] = 1;
                    mixed[h * dv + i, output] = 1;
                }
        }
        var (decayRows, decayBias) = DecayPerNeuron(a, memory, neuron => neuron / triangle);
        return new GatedLayerWeights(value, valueBias, key, keyBias, a.FeatureMap, memory, n, outputValue, outputQuery,
            Readout(a, mixed), decayRows, decayBias);
    }

    /// <summary>D = W_O times the per-head sums (the identity over heads without an output projection).</summary>
    private static double[,] Readout(Attention a, double[,] mixed)
    {
        if (a.Weights!.Output is not { } output) return mixed;
        int outputs = output.Shape[0], inner = mixed.GetLength(0), m = mixed.GetLength(1);
        var readout = new double[outputs, m];
        for (int o = 0; o < outputs; o++)
            for (int c = 0; c < inner; c++)
            {
                var weight = output[o, c];
                if (weight == 0) continue;
                for (int k = 0; k < m; k++) readout[o, k] += weight * mixed[c, k];
            }
        return readout;
    }

    /// <summary>Input-dependent decay: each memory neuron takes its head's row w_h and bias b_h.</summary>
    private static (double[,]?, double[]?) DecayPerNeuron(Attention a, int memory, Func<int, int> headOf)
    {
        if (!a.InputDependentDecay) return (null, null);
        var (rows, bias) = (new double[memory, a.InFeatures], new double[memory]);
        for (int neuron = 0; neuron < memory; neuron++)
        {
            CopyRow(a.Weights!.DecayWeight!, headOf(neuron), rows, neuron);
            bias[neuron] = a.Weights.DecayBias![headOf(neuron)];
        }
        return (rows, bias);
    }

    private static void CopyRow(DoubleTensor from, int row, double[,] to, int toRow)
    {
        for (int c = 0; c < from.Shape[1]; c++) to[toRow, c] = from[row, c];
    }
}
