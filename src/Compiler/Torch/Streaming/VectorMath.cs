using System.Numerics;
using Duality.Ir;
using Duality.Reference;

namespace Duality.Streaming;

/// <summary>Span arithmetic for the step kernels: SIMD dot products and matrix-vector products, no allocation.</summary>
internal static class VectorMath
{
    public static T Dot<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b) where T : unmanaged, INumber<T>
    {
        int i = 0;
        var total = T.Zero;
        if (a.Length >= Vector<T>.Count)
        {
            var acc = Vector<T>.Zero;
            for (; i <= a.Length - Vector<T>.Count; i += Vector<T>.Count)
                acc += new Vector<T>(a.Slice(i)) * new Vector<T>(b.Slice(i));
            total = Vector.Sum(acc);
        }
        for (; i < a.Length; i++) total += a[i] * b[i];
        return total;
    }

    /// <summary>y = W x + b for W: [rows, x.Length] row-major (b optional).</summary>
    public static void MatVec<T>(T[] weight, T[]? bias, ReadOnlySpan<T> x, Span<T> y) where T : unmanaged, INumber<T>
    {
        int columns = x.Length;
        for (int r = 0; r < y.Length; r++)
            y[r] = Dot<T>(weight.AsSpan(r * columns, columns), x) + (bias is null ? T.Zero : bias[r]);
    }

    /// <summary>y += a x.</summary>
    public static void AddScaled<T>(Span<T> y, T a, ReadOnlySpan<T> x) where T : unmanaged, INumber<T>
    {
        int i = 0;
        if (y.Length >= Vector<T>.Count)
        {
            var va = new Vector<T>(a);
            for (; i <= y.Length - Vector<T>.Count; i += Vector<T>.Count)
                (new Vector<T>(y.Slice(i)) + va * new Vector<T>(x.Slice(i))).CopyTo(y.Slice(i));
        }
        for (; i < y.Length; i++) y[i] += a * x[i];
    }

    public static void Apply<T>(ActivationKind kind, Span<T> values) where T : unmanaged, INumber<T>
    {
        if (kind == ActivationKind.Identity) return;
        for (int i = 0; i < values.Length; i++) values[i] = Apply(kind, values[i]);
    }

    public static T Apply<T>(ActivationKind kind, T x) where T : unmanaged, INumber<T> =>
        kind == ActivationKind.Identity ? x : T.CreateChecked(ScalarFunctions.Apply(kind, double.CreateChecked(x)));

    public static T Sigmoid<T>(T x) where T : unmanaged, INumber<T> => T.CreateChecked(ScalarFunctions.Sigmoid(double.CreateChecked(x)));

    public static T[] Values<T>(DoubleTensor tensor) where T : unmanaged, INumber<T> => tensor.Data.Select(T.CreateChecked).ToArray();
}
