using Duality.Training;

namespace Duality.Plots;

/// <summary>One named curve: points (X[i], Y[i]), in order. Lists are copied, so a series does not change afterwards.</summary>
public sealed class Series
{
    /// A series named <paramref name="name"/> through the points (x[i], y[i]).
    /// <exception cref="ArgumentNullException"><paramref name="name"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="x"/> and <paramref name="y"/> differ in length (ParamName "y").</exception>
    public Series(string name, IEnumerable<double> x, IEnumerable<double> y)
    {
        ArgumentNullException.ThrowIfNull(name);
        (Name, X, Y) = (name, [.. x], [.. y]);
        if (X.Count != Y.Count)
            throw new ArgumentException($"series '{name}' has {X.Count} x values and {Y.Count} y values; give one y per x.", nameof(y));
    }

    /// The label in the legend.
    public string Name { get; }
    /// The points' x values, in order.
    public IReadOnlyList<double> X { get; }
    /// The points' y values, one per x.
    public IReadOnlyList<double> Y { get; }

    /// <summary>A series from (x, y) points.</summary>
    public static Series Of(string name, IEnumerable<(double X, double Y)> points)
    {
        var list = points.ToList();
        return new Series(name, list.Select(p => p.X), list.Select(p => p.Y));
    }

    /// <summary>A run's recorded losses: step against loss.</summary>
    public static Series Losses(string name, TrainingResult result) =>
        new(name, result.Losses.Select(l => (double)l.Step), result.Losses.Select(l => l.Loss));

    /// <summary>Errors by sequence length: T against error.</summary>
    public static Series ByLength(string name, IEnumerable<(int Length, double Value)> points) =>
        Of(name, points.Select(p => ((double)p.Length, p.Value)));
}
