using Duality.Ir;

namespace Duality.Reference;

/// <summary>
/// The oracle: every node kind evaluated with explicit loops over batch, time and features in
/// float64, written for obviousness, not speed. Sequences are double[batch, time, features].
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
            var sources = node.Sources.Select(s => values[s.Index]).ToArray();
            values[i] = node switch
            {
                Input n => CheckInput(n, inputs[next++]),
                Projection n => Projection(n, sources[0]),
                Gate n => Map2(sources[0], sources[1], (v, g) => v * ScalarFunctions.Apply(n.Activation, g)),
                LinearRecurrence n => Recurrence(n, sources[0], sources.Length > 1 ? sources[1] : null),
                Attention n => Attention(n, sources[0]),
                Activation n => Map2(sources[0], sources[0], (x, _) => ScalarFunctions.Apply(n.Kind, x)),
                Add => Map2(sources[0], sources[1], (a, b) => a + b),
                Concat => Concatenate(sources),
                Slice n => SliceOf(n, sources[0]),
                LayerNorm n => Normalise(sources[0], n.Epsilon, centre: true, n.Weights?.Gain, n.Weights?.Bias),
                RmsNorm n => Normalise(sources[0], n.Epsilon, centre: false, n.Weights?.Gain, null),
                Scale n => Map2(sources[0], sources[0], (x, _) => n.Factor * x),
                _ => throw new GraphException(new Diagnostic("no reference", node.Name, node.Describe(),
                    "this node kind has no reference rule")),
            };
        }
        return graph.Outputs.Select(o => values[o.Index]).ToArray();
    }

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

    private static double[,,] Projection(Projection n, double[,,] x)
    {
        var (batch, time) = (x.GetLength(0), x.GetLength(1));
        var (w, b) = (n.Weights!.Weight, n.Weights.Bias);
        var y = new double[batch, time, n.OutFeatures];
        for (int i = 0; i < batch; i++)
            for (int t = 0; t < time; t++)
                for (int o = 0; o < n.OutFeatures; o++)
                {
                    double sum = b is null ? 0 : b[o];
                    for (int f = 0; f < n.InFeatures; f++) sum += w[o, f] * x[i, t, f];
                    y[i, t, o] = sum;
                }
        return y;
    }

    private static double[,,] Recurrence(LinearRecurrence n, double[,,] u, double[,,]? decay)
    {
        var (batch, time, width) = (u.GetLength(0), u.GetLength(1), n.Width);
        var complex = n.State == StateKind.Complex;
        var y = new double[batch, time, n.OutputWidth];
        for (int i = 0; i < batch; i++)
            for (int k = 0; k < width; k++)
            {
                double re = 0, im = 0;
                if (n.InitialState is { } h0) (re, im) = complex ? (h0[k, 0], h0[k, 1]) : (h0[k], 0);
                for (int t = 0; t < time; t++)
                {
                    if (decay is not null)
                        re = ScalarFunctions.Sigmoid(decay[i, t, decay.GetLength(2) == 1 ? 0 : k]) * re + u[i, t, k];
                    else if (!complex)
                        re = n.Lambda![k] * re + u[i, t, k];
                    else
                    {
                        double lre = n.Lambda![k, 0], lim = n.Lambda[k, 1];
                        (re, im) = (lre * re - lim * im + u[i, t, k], lre * im + lim * re);
                    }
                    y[i, t, k] = re;
                    if (complex && n.Readout == ComplexReadout.RealAndImaginary) y[i, t, width + k] = im;
                }
            }
        return y;
    }

    private static double[,,] Attention(Attention n, double[,,] x)
    {
        var (batch, time) = (x.GetLength(0), x.GetLength(1));
        var w = n.Weights!;
        var mixed = new double[batch, time, n.Heads * n.ValueWidth];
        for (int i = 0; i < batch; i++)
            for (int h = 0; h < n.Heads; h++)
            {
                var q = HeadProjection(w.Query, x, i, h * n.KeyWidth, n.KeyWidth);
                var k = HeadProjection(w.Key, x, i, h * n.KeyWidth, n.KeyWidth);
                var v = HeadProjection(w.Value, x, i, h * n.ValueWidth, n.ValueWidth);
                for (int t = 0; t < time; t++)
                {
                    var last = n.Causal ? t : time - 1;
                    var weights = new double[last + 1];
                    for (int s = 0; s <= last; s++)
                    {
                        double dot = 0;
                        for (int j = 0; j < n.KeyWidth; j++)
                            dot += n.Kernel == AttentionKernel.Linear
                                ? ScalarFunctions.Apply(n.FeatureMap, q[t, j]) * ScalarFunctions.Apply(n.FeatureMap, k[s, j])
                                : q[t, j] * k[s, j];
                        weights[s] = n.Kernel == AttentionKernel.Linear
                            ? dot * PositionWeight(n, x, i, h, t, s)
                            : dot / Math.Sqrt(n.KeyWidth);
                    }
                    if (n.Kernel == AttentionKernel.Softmax)
                    {
                        var max = weights.Max();
                        var total = 0.0;
                        for (int s = 0; s <= last; s++) total += weights[s] = Math.Exp(weights[s] - max);
                        for (int s = 0; s <= last; s++) weights[s] /= total;
                    }
                    for (int c = 0; c < n.ValueWidth; c++)
                    {
                        double sum = 0;
                        for (int s = 0; s <= last; s++) sum += weights[s] * v[s, c];
                        mixed[i, t, h * n.ValueWidth + c] = sum;
                    }
                }
            }
        if (w.Output is not { } output) return mixed;
        var y = new double[batch, time, n.OutputWidth];
        for (int i = 0; i < batch; i++)
            for (int t = 0; t < time; t++)
                for (int o = 0; o < n.OutputWidth; o++)
                {
                    double sum = 0;
                    for (int c = 0; c < n.Heads * n.ValueWidth; c++) sum += output[o, c] * mixed[i, t, c];
                    y[i, t, o] = sum;
                }
        return y;
    }

    /// <summary>w(t, s) of a linear attention: 1, gamma^(t-s), gamma^(t-s) cos(theta (t-s)), or prod_{r=s+1..t} sigmoid(w_h . x_r + b_h).</summary>
    private static double PositionWeight(Attention n, double[,,] x, int i, int h, int t, int s)
    {
        if (n.InputDependentDecay)
        {
            double product = 1;
            for (int r = s + 1; r <= t; r++)
            {
                double logit = n.Weights!.DecayBias![h];
                for (int f = 0; f < n.InFeatures; f++) logit += n.Weights.DecayWeight![h, f] * x[i, r, f];
                product *= ScalarFunctions.Sigmoid(logit);
            }
            return product;
        }
        var weight = Math.Pow(n.Decay ?? 1.0, t - s);
        return n.DecayPhase is { } theta ? weight * Math.Cos(theta * (t - s)) : weight;
    }

    /// <summary>Rows [offset, offset + width) of W applied to every step of batch element i: [time, width].</summary>
    private static double[,] HeadProjection(DoubleTensor weight, double[,,] x, int i, int offset, int width)
    {
        var (time, features) = (x.GetLength(1), x.GetLength(2));
        var y = new double[time, width];
        for (int t = 0; t < time; t++)
            for (int r = 0; r < width; r++)
            {
                double sum = 0;
                for (int f = 0; f < features; f++) sum += weight[offset + r, f] * x[i, t, f];
                y[t, r] = sum;
            }
        return y;
    }

    private static double[,,] Map2(double[,,] a, double[,,] b, Func<double, double, double> f)
    {
        var y = new double[a.GetLength(0), a.GetLength(1), a.GetLength(2)];
        for (int i = 0; i < a.GetLength(0); i++)
            for (int t = 0; t < a.GetLength(1); t++)
                for (int c = 0; c < a.GetLength(2); c++)
                    y[i, t, c] = f(a[i, t, c], b[i, t, c]);
        return y;
    }

    private static double[,,] Concatenate(double[][,,] parts)
    {
        var (batch, time) = (parts[0].GetLength(0), parts[0].GetLength(1));
        var y = new double[batch, time, parts.Sum(p => p.GetLength(2))];
        for (int i = 0; i < batch; i++)
            for (int t = 0; t < time; t++)
            {
                int c = 0;
                foreach (var part in parts)
                    for (int f = 0; f < part.GetLength(2); f++) y[i, t, c++] = part[i, t, f];
            }
        return y;
    }

    private static double[,,] SliceOf(Slice n, double[,,] x)
    {
        var y = new double[x.GetLength(0), x.GetLength(1), n.Length];
        for (int i = 0; i < x.GetLength(0); i++)
            for (int t = 0; t < x.GetLength(1); t++)
                for (int c = 0; c < n.Length; c++) y[i, t, c] = x[i, t, n.Start + c];
        return y;
    }

    private static double[,,] Normalise(double[,,] x, double epsilon, bool centre, DoubleTensor? gain, DoubleTensor? bias)
    {
        var (batch, time, width) = (x.GetLength(0), x.GetLength(1), x.GetLength(2));
        var y = new double[batch, time, width];
        for (int i = 0; i < batch; i++)
            for (int t = 0; t < time; t++)
            {
                double mean = 0;
                if (centre)
                {
                    for (int c = 0; c < width; c++) mean += x[i, t, c];
                    mean /= width;
                }
                double square = 0;
                for (int c = 0; c < width; c++) square += (x[i, t, c] - mean) * (x[i, t, c] - mean);
                var scale = 1 / Math.Sqrt(square / width + epsilon);
                for (int c = 0; c < width; c++)
                    y[i, t, c] = (x[i, t, c] - mean) * scale * (gain is null ? 1 : gain[c]) + (bias is null ? 0 : bias[c]);
            }
        return y;
    }
}
