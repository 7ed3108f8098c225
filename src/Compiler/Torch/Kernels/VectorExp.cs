using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>
/// e^x on SIMD vectors, inlined into the calling kernel (so it is optimised with it from the first call):
/// x = k ln 2 + r with |r| &lt;= ln 2 / 2 (ln 2 split in two parts), e^r = 1 + r E(r) with E(r) = (e^r - 1) / r by its Taylor
/// polynomial in fused multiply-adds (degree 13 for double, 7 for float: truncation below 3e-19 and 6e-10 relative),
/// 2^k from the exponent bits. Arguments are clamped to the finite range, so e^x saturates instead of overflowing.
/// </summary>
internal static class VectorExp
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Exp<T>(Vector<T> x) where T : unmanaged, INumber<T> =>
        typeof(T) == typeof(float) ? Vector.As<float, T>(Exp(Vector.As<T, float>(x))) : Vector.As<double, T>(Exp(Vector.As<T, double>(x)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<double> Exp(Vector<double> x)
    {
        x = Vector.Min(Vector.Max(x, new Vector<double>(-708.0)), new Vector<double>(709.0));
        var k = Vector.Round(x * new Vector<double>(1.4426950408889634));
        var r = Vector.FusedMultiplyAdd(k, new Vector<double>(-0.693147180369123816490), x);
        r = Vector.FusedMultiplyAdd(k, new Vector<double>(-1.90821492927058770002e-10), r);
        var p = Vector.FusedMultiplyAdd(r, Series(r), Vector<double>.One);
        return p * Vector.As<long, double>(Vector.ShiftLeft(Vector.ConvertToInt64(k) + new Vector<long>(1023), 52));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<float> Exp(Vector<float> x)
    {
        x = Vector.Min(Vector.Max(x, new Vector<float>(-87f)), new Vector<float>(88f));
        var k = Vector.Round(x * new Vector<float>(1.44269504f));
        var r = Vector.FusedMultiplyAdd(k, new Vector<float>(-0.693359375f), x);
        r = Vector.FusedMultiplyAdd(k, new Vector<float>(2.12194440e-4f), r);
        var p = Vector.FusedMultiplyAdd(r, Series(r), Vector<float>.One);
        return p * Vector.As<int, float>(Vector.ShiftLeft(Vector.ConvertToInt32(k) + new Vector<int>(127), 23));
    }

    /// <summary>
    /// e^x - 1 to full relative precision also near 0: for |x| &lt;= ln 2 / 2, x E(x) (the polynomial e^x uses), beyond,
    /// e^x - 1 (which cancels no digit there, |e^x - 1| &gt; 0.29).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> ExpMinusOne<T>(Vector<T> x) where T : unmanaged, INumber<T>
    {
        if (typeof(T) == typeof(float))
        {
            var xf = Vector.As<T, float>(x);
            var near = Vector.LessThanOrEqual(Vector.Abs(xf), new Vector<float>(0.34657359f));
            return Vector.As<float, T>(Vector.ConditionalSelect(near, xf * Series(xf), Exp(xf) - Vector<float>.One));
        }
        var xd = Vector.As<T, double>(x);
        var close = Vector.LessThanOrEqual(Vector.Abs(xd), new Vector<double>(0.34657359027997264));
        return Vector.As<double, T>(Vector.ConditionalSelect(close, xd * Series(xd), Exp(xd) - Vector<double>.One));
    }

    /// <summary>E(x) = (e^x - 1) / x = sum_n x^n / (n + 1)! to x^13 / 14!, written out (a table of coefficients costs a load per term).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<double> Series(Vector<double> x)
    {
        var p = new Vector<double>(1.0 / 87178291200);
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 6227020800));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 479001600));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 39916800));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 3628800));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 362880));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 40320));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 5040));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 720));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 120));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 24));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(1.0 / 6));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<double>(0.5));
        return Vector.FusedMultiplyAdd(p, x, Vector<double>.One);
    }

    /// <summary>E(x) = (e^x - 1) / x = sum_n x^n / (n + 1)! to x^7 / 8!.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<float> Series(Vector<float> x)
    {
        var p = new Vector<float>(1f / 40320);
        p = Vector.FusedMultiplyAdd(p, x, new Vector<float>(1f / 5040));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<float>(1f / 720));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<float>(1f / 120));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<float>(1f / 24));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<float>(1f / 6));
        p = Vector.FusedMultiplyAdd(p, x, new Vector<float>(0.5f));
        return Vector.FusedMultiplyAdd(p, x, Vector<float>.One);
    }
}

/// <summary>a * b + c in one rounding, for the generic kernels (float and double).</summary>
internal static class VectorFused
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> MultiplyAdd<T>(Vector<T> a, Vector<T> b, Vector<T> c) where T : unmanaged, INumber<T> =>
        typeof(T) == typeof(float)
            ? Vector.As<float, T>(Vector.FusedMultiplyAdd(Vector.As<T, float>(a), Vector.As<T, float>(b), Vector.As<T, float>(c)))
            : Vector.As<double, T>(Vector.FusedMultiplyAdd(Vector.As<T, double>(a), Vector.As<T, double>(b), Vector.As<T, double>(c)));
}
