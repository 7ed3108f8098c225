using Duality.Ir;

namespace Duality.Reference;

/// <summary>Loops the reference semantics of several node kinds share, over sequences double[batch, time, features].</summary>
internal static class SequenceMath
{
    /// <summary>y[i, t, c] = f(a[i, t, c], b[i, t, c]).</summary>
    public static double[,,] Map2(double[,,] a, double[,,] b, Func<double, double, double> f)
    {
        var y = new double[a.GetLength(0), a.GetLength(1), a.GetLength(2)];
        for (int i = 0; i < a.GetLength(0); i++)
            for (int t = 0; t < a.GetLength(1); t++)
                for (int c = 0; c < a.GetLength(2); c++)
                    y[i, t, c] = f(a[i, t, c], b[i, t, c]);
        return y;
    }

    /// <summary>y = [a; b; ...] along features.</summary>
    public static double[,,] Concatenate(IReadOnlyList<double[,,]> parts)
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

    /// <summary>
    /// y = (x - mean) / sqrt(mean((x - mean)^2) + epsilon) * g + b, the mean and square taken over each of
    /// <paramref name="groups"/> consecutive groups of features (all features by default); mean = 0 without centring.
    /// </summary>
    public static double[,,] Normalise(double[,,] x, double epsilon, bool centre, DoubleTensor? gain, DoubleTensor? bias, int groups = 1)
    {
        var (batch, time, features) = (x.GetLength(0), x.GetLength(1), x.GetLength(2));
        var width = features / groups;
        var y = new double[batch, time, features];
        for (int i = 0; i < batch; i++)
            for (int t = 0; t < time; t++)
                for (int from = 0; from < features; from += width)
                {
                    var group = new double[width];
                    for (int c = 0; c < width; c++) group[c] = x[i, t, from + c];
                    var (mean, scale) = NormStatistics.Of<double>(group, centre, epsilon);
                    for (int c = from; c < from + width; c++)
                        y[i, t, c] = (x[i, t, c] - mean) * scale * (gain is null ? 1 : gain[c]) + (bias is null ? 0 : bias[c]);
                }
        return y;
    }

    /// <summary>Rows [offset, offset + width) of W applied to every step of batch element i: [time, width].</summary>
    public static double[,] HeadProjection(DoubleTensor weight, double[,,] x, int i, int offset, int width)
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
}
