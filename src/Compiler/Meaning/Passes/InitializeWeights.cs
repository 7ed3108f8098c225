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
/// Gives every node that lacks weights seeded values; nodes that carry weights keep them. Each of the
/// node's <see cref="Node.WeightSlots"/> is drawn in order, value by value in row-major order:
///   Uniform(a, b)             w ~ U(a, b)
///   Gaussian(s)               w ~ N(0, s^2)
///   Eigenvalues               lambda ~ U(low, high); complex, per neuron: r ~ U(low, high), theta ~ U(0, max), r e^(i theta)
///   Constant(c, low, high)    w = c (Perturbed: w ~ U(low, high))
///   None                      kept as it is
/// A node's values depend only on the seed and its path, so adding a layer leaves the others' unchanged.
/// Returns the same instance when nothing is missing.
/// </summary>
public static class InitializeWeights
{
    /// The graph with every node that lacks weights initialised from <paramref name="seed"/> in the given
    /// <paramref name="style"/>; the same graph instance when every node already has its weights.
    /// <exception cref="GraphException">The graph with the new weights does not verify (a bug of a node kind, never of the caller).</exception>
    public static Graph Run(Graph graph, int seed, WeightInit style = WeightInit.Standard) =>
        graph.MapNodes(node => node.HasWeights ? node : Initialize(node, SeededRandom.ForNode(seed, node.Name), style));

    private static Node Initialize(Node node, SeededRandom random, WeightInit style)
    {
        var values = new Dictionary<string, DoubleTensor>();
        foreach (var slot in node.WeightSlots)
            if ((Draw(slot, random, style) ?? slot.Value) is { } value) values[slot.Name] = value;
        var initialised = node.WithWeights(values);
        return initialised.HasWeights
            ? initialised
            : throw new InvalidOperationException(
                $"bug in pass InitializeWeights: {node.GetType().Name} '{node.Name}' reports missing weights but its weight slots do not supply them");
    }

    private static DoubleTensor? Draw(WeightSlot slot, SeededRandom random, WeightInit style) => slot.Draw switch
    {
        WeightDraw.Uniform u => Fill(slot.Shape, () => random.Uniform(u.Low, u.High)),
        WeightDraw.Gaussian g => Fill(slot.Shape, () => g.Scale * random.Gaussian()),
        WeightDraw.Eigenvalues e => Eigenvalues(random, e, slot.Shape),
        WeightDraw.Constant c => Fill(slot.Shape, () => style == WeightInit.Perturbed ? random.Uniform(c.PerturbedLow, c.PerturbedHigh) : c.Value),
        WeightDraw.None => null,
        _ => throw new InvalidOperationException($"bug in pass InitializeWeights: no rule draws {slot.Draw.GetType().Name} (slot {slot.Name})"),
    };

    private static DoubleTensor Eigenvalues(SeededRandom random, WeightDraw.Eigenvalues e, int[] shape)
    {
        if (!e.Complex) return Fill(shape, () => random.Uniform(e.Low, e.High));
        var values = new double[shape[0] * 2];
        for (int i = 0; i < shape[0]; i++)
        {
            double magnitude = random.Uniform(e.Low, e.High), phase = random.Uniform(0, e.MaxPhase);
            values[2 * i] = magnitude * Math.Cos(phase);
            values[2 * i + 1] = magnitude * Math.Sin(phase);
        }
        return new DoubleTensor(shape, values);
    }

    private static DoubleTensor Fill(int[] shape, Func<double> next)
    {
        var data = new double[shape.Aggregate(1, (a, d) => a * d)];
        for (int i = 0; i < data.Length; i++) data[i] = next();
        return new DoubleTensor(shape, data);
    }
}
