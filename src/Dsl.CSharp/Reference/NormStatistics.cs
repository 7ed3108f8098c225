using System.Numerics;

namespace Duality.Reference;

/// <summary>
/// The mean mu (0 without centring) and scale r = 1 / sqrt(mean((x - mu)^2) + epsilon) of one group of features, at any
/// magnitude: when the sums overflow (|x| beyond the square root of the largest value), they are taken again on x 2^-k,
/// 2^k just above max |x| (exact), with epsilon 2^-2k: r = 2^-k / sqrt(mean((x 2^-k - mu 2^-k)^2) + epsilon 2^-2k).
/// </summary>
internal static class NormStatistics
{
    public static (T Mean, T Scale) Of<T>(ReadOnlySpan<T> x, bool centre, T epsilon) where T : IFloatingPointIeee754<T>
    {
        var (mean, squares) = Sums(x, centre, T.One);
        var count = T.CreateChecked(x.Length);
        if (T.IsFinite(mean) && T.IsFinite(squares)) return (mean, T.One / T.Sqrt(squares / count + epsilon));
        return Rescaled(x, centre, epsilon, Largest(x));
    }

    /// <summary>max |x|: the magnitude the rescaled sums divide out (not finite when x is not).</summary>
    public static T Largest<T>(ReadOnlySpan<T> x) where T : IFloatingPointIeee754<T>
    {
        var largest = T.Zero;
        foreach (var v in x) largest = T.Max(largest, T.Abs(v));
        return largest;
    }

    /// <summary>The statistics taken on x 2^-k, 2^k just above <paramref name="largest"/>; NaN statistics when x holds an infinity or NaN.</summary>
    public static (T Mean, T Scale) Rescaled<T>(ReadOnlySpan<T> x, bool centre, T epsilon, T largest) where T : IFloatingPointIeee754<T>
    {
        if (!T.IsFinite(largest)) return (T.NaN, T.NaN);
        var k = T.ILogB(largest) + 1;
        var unit = T.ScaleB(T.One, -k);
        var (mean, squares) = Sums(x, centre, unit);
        var r = T.One / T.Sqrt(squares / T.CreateChecked(x.Length) + T.ScaleB(epsilon, -2 * k));
        return (T.ScaleB(mean, k), T.ScaleB(r, -k));
    }

    /// <summary>The mean of x u (0 without centring) and the sum of (x u - mean)^2.</summary>
    private static (T Mean, T Squares) Sums<T>(ReadOnlySpan<T> x, bool centre, T unit) where T : IFloatingPointIeee754<T>
    {
        var mean = T.Zero;
        if (centre)
        {
            foreach (var v in x) mean += v * unit;
            mean /= T.CreateChecked(x.Length);
        }
        var squares = T.Zero;
        foreach (var v in x) squares += (v * unit - mean) * (v * unit - mean);
        return (mean, squares);
    }
}
