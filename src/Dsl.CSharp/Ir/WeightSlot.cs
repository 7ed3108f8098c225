namespace Duality.Ir;

/// <summary>A tensor a node holds: its name, its shape from the node's hyper-parameters, how it is drawn, and its value (null when absent).</summary>
public sealed record WeightSlot(string Name, int[] Shape, WeightDraw Draw, DoubleTensor? Value);

/// <summary>How a weight is initialised, value by value in row-major order.</summary>
public abstract record WeightDraw
{
    private WeightDraw() { }

    /// <summary>w ~ U(Low, High).</summary>
    public sealed record Uniform(double Low, double High) : WeightDraw;

    /// <summary>w ~ N(0, Scale^2).</summary>
    public sealed record Gaussian(double Scale) : WeightDraw;

    /// <summary>
    /// Eigenvalues of a diagonal recurrence, one per neuron: lambda ~ U(Low, High) when real; when complex,
    /// r ~ U(Low, High) then theta ~ U(0, MaxPhase), stored as [r cos theta, r sin theta].
    /// </summary>
    public sealed record Eigenvalues(bool Complex, double Low, double High, double MaxPhase) : WeightDraw;

    /// <summary>w = Value (a norm's gain or bias); perturbed initialisation draws w ~ U(PerturbedLow, PerturbedHigh) instead.</summary>
    public sealed record Constant(double Value, double PerturbedLow, double PerturbedHigh) : WeightDraw;

    /// <summary>Not initialised: an optional tensor that keeps its value, absent or given.</summary>
    public sealed record None : WeightDraw;
}
