namespace Duality.Ir;

/// <summary>A tensor a node holds: its name, its shape from the node's hyper-parameters, how it is drawn, and its value (null when absent).</summary>
/// <param name="Name">The tensor's name in the node ("Weight", "Query", ...), the key of graph files.</param>
/// <param name="Shape">Its shape, from the node's hyper-parameters.</param>
/// <param name="Draw">How it is initialised.</param>
/// <param name="Value">Its current value, or null when absent.</param>
public sealed record WeightSlot(string Name, int[] Shape, WeightDraw Draw, DoubleTensor? Value);

/// <summary>How a weight is initialised, value by value in row-major order.</summary>
public abstract record WeightDraw
{
    private WeightDraw() { }

    /// <summary>w ~ U(Low, High).</summary>
    /// <param name="Low">a.</param>
    /// <param name="High">b.</param>
    public sealed record Uniform(double Low, double High) : WeightDraw;

    /// <summary>w ~ N(0, Scale^2).</summary>
    /// <param name="Scale">The standard deviation.</param>
    public sealed record Gaussian(double Scale) : WeightDraw;

    /// <summary>
    /// Eigenvalues of a diagonal recurrence, one per neuron: lambda ~ U(Low, High) when real; when complex,
    /// r ~ U(Low, High) then theta ~ U(0, MaxPhase), stored as [r cos theta, r sin theta].
    /// </summary>
    /// <param name="Complex">Whether each eigenvalue is complex, stored as [re, im].</param>
    /// <param name="Low">The smallest modulus.</param>
    /// <param name="High">The largest modulus.</param>
    /// <param name="MaxPhase">The largest angle theta, in radians.</param>
    public sealed record Eigenvalues(bool Complex, double Low, double High, double MaxPhase) : WeightDraw;

    /// <summary>w = Value (a norm's gain or bias); perturbed initialisation draws w ~ U(PerturbedLow, PerturbedHigh) instead.</summary>
    /// <param name="Value">The value of every entry.</param>
    /// <param name="PerturbedLow">The low end of the perturbed draw.</param>
    /// <param name="PerturbedHigh">The high end of the perturbed draw.</param>
    public sealed record Constant(double Value, double PerturbedLow, double PerturbedHigh) : WeightDraw;

    /// <summary>Not initialised: an optional tensor that keeps its value, absent or given.</summary>
    public sealed record None : WeightDraw;
}
