using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>
/// Layer, RMS and group norms row by row: each of a row's groups of g consecutive features is normalised,
/// x^ = (x - mu) r with mu its mean (0 without centring) and r = 1 / sqrt(mean((x - mu)^2) + epsilon), then y = x^ gain + bias.
/// Backward, with dx^ = dy gain:  dx = r (dx^ - mean(dx^) - x^ mean(dx^ x^))  (without centring, no mean(dx^) term),
/// dgain = sum over rows of dy x^, dbias = sum of dy. One pass over x forward and one over x and dy backward, where the
/// composite form takes a pass per operation. x, y, dy, dx: [rows, width] contiguous; mu and r: [rows, groups].
/// Parallel over ranges of rows (<see cref="RowRanges"/>); each range sums its own share of dgain and dbias.
/// </summary>
internal static unsafe class NormRows
{
    /// <summary>Sizes and constants of one call.</summary>
    public readonly record struct Shape(long Rows, int Width, int Groups, bool Centre, double Epsilon)
    {
        public int Group => Width / Groups;
    }

    /// <summary>Ranges of rows (<see cref="RowRanges.Count"/>).</summary>
    public static int Ranges(Shape shape) => RowRanges.Count(shape.Rows, shape.Width);

    public static void Forward<T>(T* x, T* gain, T* bias, T* y, T* mean, T* scale, Shape shape) where T : unmanaged, IFloatingPointIeee754<T>
        => RowRanges.Run(Ranges(shape), shape.Rows, (_, first, end) => ForwardRows(x, gain, bias, y, mean, scale, shape, first, end));

    /// <summary>dx, and each range's share of dgain and dbias in rows of <paramref name="gainRows"/> and <paramref name="biasRows"/> ([ranges, width], or null).</summary>
    public static void Backward<T>(T* dy, T* x, T* gain, T* mean, T* scale, T* dx, T* gainRows, T* biasRows, Shape shape, int ranges)
        where T : unmanaged, IFloatingPointIeee754<T>
        => RowRanges.Run(ranges, shape.Rows, (r, first, end) => BackwardRows(dy, x, gain, mean, scale, dx,
            gainRows is null ? null : gainRows + (long)r * shape.Width, biasRows is null ? null : biasRows + (long)r * shape.Width,
            shape, first, end));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRows<T>(T* x, T* gain, T* bias, T* y, T* mean, T* scale, Shape shape, long first, long end)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int g = shape.Group;
        var (count, epsilon) = (T.CreateTruncating(g), T.CreateTruncating(shape.Epsilon));
        for (long row = first; row < end; row++)
            for (int group = 0; group < shape.Groups; group++)
            {
                long at = row * shape.Width + group * g, statistic = row * shape.Groups + group;
                T* xs = x + at;
                var mu = shape.Centre ? Sum(xs, g) / count : T.Zero;
                var squares = CentredSquares(xs, mu, g);
                T r;
                if (T.IsFinite(mu) && T.IsFinite(squares)) r = T.One / T.Sqrt(squares / count + epsilon);
                else
                {
                    // sums beyond the largest value: taken again at a scale that keeps them finite (rare, so not vectorised)
                    var values = new ReadOnlySpan<T>(xs, g);
                    (mu, r) = Reference.NormStatistics.Rescaled(values, shape.Centre, epsilon, Reference.NormStatistics.Largest(values));
                }
                (mean[statistic], scale[statistic]) = (mu, r);
                Affine(xs, mu, r, gain is null ? null : gain + group * g, bias is null ? null : bias + group * g, y + at, g);
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardRows<T>(T* dy, T* x, T* gain, T* mean, T* scale, T* dx, T* gainRow, T* biasRow, Shape shape, long first, long end)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int g = shape.Group, n = Vector<T>.Count;
        var count = T.CreateTruncating(g);
        if (gainRow is not null) new Span<T>(gainRow, shape.Width).Clear();
        if (biasRow is not null) new Span<T>(biasRow, shape.Width).Clear();
        for (long row = first; row < end; row++)
            for (int group = 0; group < shape.Groups; group++)
            {
                long at = row * shape.Width + group * g, statistic = row * shape.Groups + group;
                T* xs = x + at, dys = dy + at, dxs = dx + at;
                T* gs = gain is null ? null : gain + group * g;
                var (mu, r) = (mean[statistic], scale[statistic]);
                // sums of dx^ and dx^ x^ over the group, dx^ = dy gain
                Vector<T> sum = Vector<T>.Zero, product = Vector<T>.Zero, muV = new(mu), rV = new(r);
                int i = 0;
                for (; i <= g - n; i += n)
                {
                    var hat = (Vector.Load(xs + i) - muV) * rV;
                    var d = gs is null ? Vector.Load(dys + i) : Vector.Load(dys + i) * Vector.Load(gs + i);
                    sum += d;
                    product += d * hat;
                }
                T s = Vector.Sum(sum), p = Vector.Sum(product);
                for (; i < g; i++)
                {
                    var hat = (xs[i] - mu) * r;
                    var d = gs is null ? dys[i] : dys[i] * gs[i];
                    s += d;
                    p += d * hat;
                }
                var (a, b) = (shape.Centre ? s / count : T.Zero, p / count);
                Vector<T> aV = new(a), bV = new(b);
                for (i = 0; i <= g - n; i += n)
                {
                    var hat = (Vector.Load(xs + i) - muV) * rV;
                    var dyv = Vector.Load(dys + i);
                    var d = gs is null ? dyv : dyv * Vector.Load(gs + i);
                    Vector.Store(rV * (d - aV - hat * bV), dxs + i);
                    if (gainRow is not null) Vector.Store(Vector.Load(gainRow + group * g + i) + dyv * hat, gainRow + group * g + i);
                    if (biasRow is not null) Vector.Store(Vector.Load(biasRow + group * g + i) + dyv, biasRow + group * g + i);
                }
                for (; i < g; i++)
                {
                    var hat = (xs[i] - mu) * r;
                    var d = gs is null ? dys[i] : dys[i] * gs[i];
                    dxs[i] = r * (d - a - hat * b);
                    if (gainRow is not null) gainRow[group * g + i] += dys[i] * hat;
                    if (biasRow is not null) biasRow[group * g + i] += dys[i];
                }
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Sum<T>(T* x, int width) where T : unmanaged, INumber<T>
    {
        int i = 0;
        var sum = Vector<T>.Zero;
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count) sum += Vector.Load(x + i);
        var total = Vector.Sum(sum);
        for (; i < width; i++) total += x[i];
        return total;
    }

    /// <summary>sum((x - mu)^2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T CentredSquares<T>(T* x, T mu, int width) where T : unmanaged, INumber<T>
    {
        int i = 0;
        Vector<T> sum = Vector<T>.Zero, muV = new(mu);
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
        {
            var c = Vector.Load(x + i) - muV;
            sum += c * c;
        }
        var total = Vector.Sum(sum);
        for (; i < width; i++) total += (x[i] - mu) * (x[i] - mu);
        return total;
    }

    /// <summary>y = (x - mu) r gain + bias (gain 1 and bias 0 when null).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Affine<T>(T* x, T mu, T r, T* gain, T* bias, T* y, int width) where T : unmanaged, INumber<T>
    {
        int i = 0;
        Vector<T> muV = new(mu), rV = new(r);
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
        {
            var v = (Vector.Load(x + i) - muV) * rV;
            if (gain is not null) v *= Vector.Load(gain + i);
            if (bias is not null) v += Vector.Load(bias + i);
            Vector.Store(v, y + i);
        }
        for (; i < width; i++)
        {
            var v = (x[i] - mu) * r;
            if (gain is not null) v *= gain[i];
            if (bias is not null) v += bias[i];
            y[i] = v;
        }
    }
}
