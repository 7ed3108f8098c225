using Duality.Ir;

namespace Duality.Passes;

/// <summary>How <see cref="InitializeWeights"/> draws values.</summary>
public enum WeightInit
{
    /// <summary>What training starts from: fan-in scaled projections, N(0, 1/d) attention, unit norms.</summary>
    Standard,

    /// <summary>Standard, but norm gains and biases are random too, so tests see every weight matter.</summary>
    Perturbed,
}

/// <summary>
/// Gives every node that lacks weights seeded values; nodes that carry weights keep them.
///   Projection    W, b ~ U(-1/sqrt(in), 1/sqrt(in))
///   Attention     W_Q, W_K, W_V ~ N(0, 1/in),  W_O ~ N(0, 1/(heads value width));
///                 input-dependent decay w ~ N(0, 1/in), b ~ U(1, 4) (decays near sigmoid(b), close to 1)
///   Recurrence    trainable lambda ~ U(0.5, 0.99); complex: r ~ U(0.5, 0.99), theta ~ U(0, pi/4)
///   Norms         gain 1, bias 0 (Perturbed: gain ~ U(0.5, 1.5), bias ~ U(-0.5, 0.5))
/// A node's values depend only on the seed and its path, so adding a layer leaves the others' unchanged.
/// Returns the same instance when nothing is missing.
/// </summary>
public static class InitializeWeights
{
    public static Graph Run(Graph graph, int seed, WeightInit style = WeightInit.Standard) =>
        graph.MapNodes(node => node.HasWeights ? node : Initialize(node, SeededRandom.ForNode(seed, node.Name), style));

    private static Node Initialize(Node node, SeededRandom random, WeightInit style) => node switch
    {
        Projection p => p with
        {
            Weights = new ProjectionWeights(
                Uniform(random, 1 / Math.Sqrt(p.InFeatures), p.OutFeatures, p.InFeatures),
                p.Bias ? Uniform(random, 1 / Math.Sqrt(p.InFeatures), p.OutFeatures) : null),
        },
        Attention a => a with
        {
            Weights = new AttentionWeights(
                Gaussian(random, 1 / Math.Sqrt(a.InFeatures), a.Heads * a.KeyWidth, a.InFeatures),
                Gaussian(random, 1 / Math.Sqrt(a.InFeatures), a.Heads * a.KeyWidth, a.InFeatures),
                Gaussian(random, 1 / Math.Sqrt(a.InFeatures), a.Heads * a.ValueWidth, a.InFeatures),
                a.OutFeatures is { } o ? Gaussian(random, 1 / Math.Sqrt(a.Heads * a.ValueWidth), o, a.Heads * a.ValueWidth) : null,
                a.InputDependentDecay ? Gaussian(random, 1 / Math.Sqrt(a.InFeatures), a.Heads, a.InFeatures) : null,
                a.InputDependentDecay ? Fill([a.Heads], () => random.Uniform(1, 4)) : null),
        },
        LinearRecurrence r => r with { Lambda = Eigenvalues(random, r) },
        LayerNorm n => n with { Weights = Norm(random, n.Width, style, withBias: true) },
        RmsNorm n => n with { Weights = Norm(random, n.Width, style, withBias: false) },
        _ => throw new InvalidOperationException($"bug in pass InitializeWeights: {node.GetType().Name} '{node.Name}' reports missing weights but has no initialiser"),
    };

    private static DoubleTensor Eigenvalues(SeededRandom random, LinearRecurrence r)
    {
        if (r.State == StateKind.Real)
            return DoubleTensor.Vector(Enumerable.Range(0, r.Width).Select(_ => random.Uniform(0.5, 0.99)).ToArray());
        var values = new double[r.Width * 2];
        for (int i = 0; i < r.Width; i++)
        {
            double magnitude = random.Uniform(0.5, 0.99), phase = random.Uniform(0, Math.PI / 4);
            values[2 * i] = magnitude * Math.Cos(phase);
            values[2 * i + 1] = magnitude * Math.Sin(phase);
        }
        return new DoubleTensor(ValueList.Of(r.Width, 2), values);
    }

    private static NormWeights Norm(SeededRandom random, int width, WeightInit style, bool withBias)
    {
        var perturbed = style == WeightInit.Perturbed;
        var gain = Enumerable.Range(0, width).Select(_ => perturbed ? random.Uniform(0.5, 1.5) : 1.0).ToArray();
        var bias = Enumerable.Range(0, width).Select(_ => perturbed ? random.Uniform(-0.5, 0.5) : 0.0).ToArray();
        return new NormWeights(DoubleTensor.Vector(gain), withBias ? DoubleTensor.Vector(bias) : null);
    }

    private static DoubleTensor Uniform(SeededRandom random, double bound, params int[] shape) =>
        Fill(shape, () => random.Uniform(-bound, bound));

    private static DoubleTensor Gaussian(SeededRandom random, double scale, params int[] shape) =>
        Fill(shape, () => scale * random.Gaussian());

    private static DoubleTensor Fill(int[] shape, Func<double> next)
    {
        var data = new double[shape.Aggregate(1, (a, d) => a * d)];
        for (int i = 0; i < data.Length; i++) data[i] = next();
        return new DoubleTensor(shape, data);
    }
}
