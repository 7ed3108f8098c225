using System.Numerics;
using System.Runtime.CompilerServices;
using Duality.Ir;

namespace Duality.Kernels;

/// <summary>
/// The elementwise functions of the fused forward passes at one vector width (<see cref="ILanes{TV, T}"/>), so that a
/// pass runs them on 512-bit vectors where those run at full rate and on Vector&lt;T&gt; for the rest of a row: the
/// formulas of <see cref="VectorExp"/> and the gate functions of <see cref="GatedScan"/>, step for step, so both widths
/// give the same values.
/// </summary>
internal static class LanesMath
{
    /// <summary>e^x: x = k ln 2 + r, e^r = 1 + r E(r) by its Taylor polynomial, 2^k from the exponent bits (<see cref="VectorExp.Exp{T}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Exp<T, TV, TL>(TV x) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T>
    {
        var single = typeof(T) == typeof(float);
        x = TL.Min(TL.Max(x, Constant<T, TV, TL>(single ? -87.0 : -708.0)), Constant<T, TV, TL>(single ? 88.0 : 709.0));
        var k = TL.Round(TL.Multiply(x, Constant<T, TV, TL>(single ? 1.44269504f : 1.4426950408889634)));
        var r = TL.MultiplyAdd(k, Constant<T, TV, TL>(single ? -0.693359375f : -0.693147180369123816490), x);
        r = TL.MultiplyAdd(k, Constant<T, TV, TL>(single ? 2.12194440e-4f : -1.90821492927058770002e-10), r);
        return TL.Multiply(TL.MultiplyAdd(r, Series<T, TV, TL>(r), TL.Broadcast(T.One)), TL.PowerOfTwo(k));
    }

    /// <summary>e^x - 1 to full relative precision near 0: x E(x) for |x| &lt;= ln 2 / 2, e^x - 1 beyond.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV ExpMinusOne<T, TV, TL>(TV x) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T>
    {
        var bound = Constant<T, TV, TL>(typeof(T) == typeof(float) ? 0.34657359f : 0.34657359027997264);
        var far = TL.LessThan(bound, TL.Abs(x));
        return TL.Select(far, TL.Subtract(Exp<T, TV, TL>(x), TL.Broadcast(T.One)), TL.Multiply(x, Series<T, TV, TL>(x)));
    }

    /// <summary>1 / (1 + e^-x); 0 below -88 (float) or -708 (double), where e^-x saturates.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Sigmoid<T, TV, TL>(TV x) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T>
    {
        var one = TL.Broadcast(T.One);
        var below = TL.LessThan(x, Constant<T, TV, TL>(typeof(T) == typeof(float) ? -88.0 : -708.0));
        return TL.Select(below, TL.Broadcast(T.Zero), TL.Divide(one, TL.Add(one, Exp<T, TV, TL>(TL.Subtract(TL.Broadcast(T.Zero), x)))));
    }

    /// <summary>
    /// f(x) for the gate functions the fused passes compute and the elementwise pass's log sigmoid and softplus
    /// (<see cref="ElementwiseChain.Supports"/>); the identity for any other.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Activate<T, TV, TL>(ActivationKind kind, TV x) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T>
    {
        var zero = TL.Broadcast(T.Zero);
        switch (kind)
        {
            case ActivationKind.Sigmoid:
                return Sigmoid<T, TV, TL>(x);
            case ActivationKind.SiLU:
                return TL.Multiply(x, Sigmoid<T, TV, TL>(x));
            case ActivationKind.Tanh:
            {
                // tanh |x| = -(e^(-2|x|) - 1) / (1 + e^(-2|x|)), the sign of x put back
                var twice = TL.Subtract(zero, TL.Add(TL.Abs(x), TL.Abs(x)));
                var magnitude = TL.Divide(TL.Subtract(zero, ExpMinusOne<T, TV, TL>(twice)), TL.Add(TL.Broadcast(T.One), Exp<T, TV, TL>(twice)));
                return TL.Select(TL.LessThan(x, zero), TL.Subtract(zero, magnitude), magnitude);
            }
            case ActivationKind.ReLU:
                return TL.Max(x, zero);
            case ActivationKind.DecayNormaliser:
                // sqrt(1 - e^(2x)) = sqrt(-(e^(2x) - 1))
                return TL.SquareRoot(TL.Subtract(zero, ExpMinusOne<T, TV, TL>(TL.Add(x, x))));
            case ActivationKind.LogSigmoid:
                return TL.Subtract(TL.Min(x, zero), LogOnePlus<T, TV, TL>(ExpOfMinusMagnitude<T, TV, TL>(x)));
            case ActivationKind.Softplus:
                return TL.Add(TL.Max(x, zero), LogOnePlus<T, TV, TL>(ExpOfMinusMagnitude<T, TV, TL>(x)));
            default:
                return x;
        }
    }

    /// <summary>
    /// f(x) for f a type, compiled by itself: a loop that computes several functions calls them, where inlining them all
    /// would pass the compiler's inlining budget and leave their vector operations as calls.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static TV Apart<T, TV, TL, TActivation>(TV x)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T> where TActivation : struct, IActivation =>
        Activate<T, TV, TL>(TActivation.Kind, x);

    /// <summary>e^x, compiled by itself (<see cref="Apart{T, TV, TL, TActivation}"/>).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static TV ExpApart<T, TV, TL>(TV x) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T> =>
        Exp<T, TV, TL>(x);

    /// <summary>
    /// log(1 + u) for 0 &lt;= u &lt;= 1 (the log sigmoid's and softplus's log(1 + e^-|x|)): 2 atanh(s) with s = u / (2 + u)
    /// &lt;= 1/3, formed without cancelling (to full relative precision where u is below the rounding of 1), and
    /// 2 atanh(s) = 2 s sum_k s^(2k) / (2k + 1) to s^34 for double and s^16 for float (truncation below 2e-18 and 3e-9
    /// relative), in fused multiply-adds.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV LogOnePlus<T, TV, TL>(TV u) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T>
    {
        var s = TL.Divide(u, TL.Add(TL.Broadcast(T.CreateTruncating(2)), u));
        var z = TL.Multiply(s, s);
        TV sum;
        if (typeof(T) == typeof(float))
        {
            sum = TL.MultiplyAdd(Single<T, TV, TL>(1f / 17), z, Single<T, TV, TL>(1f / 15));
            sum = TL.MultiplyAdd(sum, z, Single<T, TV, TL>(1f / 13));
            sum = TL.MultiplyAdd(sum, z, Single<T, TV, TL>(1f / 11));
            sum = TL.MultiplyAdd(sum, z, Single<T, TV, TL>(1f / 9));
            sum = TL.MultiplyAdd(sum, z, Single<T, TV, TL>(1f / 7));
            sum = TL.MultiplyAdd(sum, z, Single<T, TV, TL>(1f / 5));
            sum = TL.MultiplyAdd(sum, z, Single<T, TV, TL>(1f / 3));
        }
        else
        {
            sum = TL.MultiplyAdd(Double<T, TV, TL>(1.0 / 35), z, Double<T, TV, TL>(1.0 / 33));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 31));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 29));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 27));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 25));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 23));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 21));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 19));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 17));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 15));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 13));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 11));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 9));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 7));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 5));
            sum = TL.MultiplyAdd(sum, z, Double<T, TV, TL>(1.0 / 3));
        }
        sum = TL.MultiplyAdd(sum, z, TL.Broadcast(T.One));
        return TL.Multiply(TL.Add(s, s), sum);
    }

    /// <summary>e^-|x|, 0 beyond the bound where <see cref="Exp{T, TV, TL}"/> saturates (708 for double, 87 for float).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV ExpOfMinusMagnitude<T, TV, TL>(TV x) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T>
    {
        var magnitude = TL.Abs(x);
        var beyond = TL.LessThan(Constant<T, TV, TL>(typeof(T) == typeof(double) ? 708.0 : 87.0), magnitude);
        return TL.Select(beyond, TL.Broadcast(T.Zero), Exp<T, TV, TL>(TL.Subtract(TL.Broadcast(T.Zero), magnitude)));
    }

    /// <summary>E(x) = (e^x - 1) / x = sum_n x^n / (n + 1)!, to x^13 / 14! for double and x^7 / 8! for float, written out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV Series<T, TV, TL>(TV x) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T>
    {
        TV p;
        if (typeof(T) == typeof(float))
        {
            p = TL.MultiplyAdd(Single<T, TV, TL>(1f / 40320), x, Single<T, TV, TL>(1f / 5040));
            p = TL.MultiplyAdd(p, x, Single<T, TV, TL>(1f / 720));
            p = TL.MultiplyAdd(p, x, Single<T, TV, TL>(1f / 120));
            p = TL.MultiplyAdd(p, x, Single<T, TV, TL>(1f / 24));
            p = TL.MultiplyAdd(p, x, Single<T, TV, TL>(1f / 6));
            p = TL.MultiplyAdd(p, x, Single<T, TV, TL>(0.5f));
        }
        else
        {
            p = TL.MultiplyAdd(Double<T, TV, TL>(1.0 / 87178291200), x, Double<T, TV, TL>(1.0 / 6227020800));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 479001600));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 39916800));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 3628800));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 362880));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 40320));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 5040));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 720));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 120));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 24));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(1.0 / 6));
            p = TL.MultiplyAdd(p, x, Double<T, TV, TL>(0.5));
        }
        return TL.MultiplyAdd(p, x, TL.Broadcast(T.One));
    }

    /// <summary>A float constant in every lane (T is float).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV Single<T, TV, TL>(float value) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T> =>
        TL.Broadcast(T.CreateTruncating(value));

    /// <summary>A double constant in every lane (T is double).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV Double<T, TV, TL>(double value) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T> =>
        TL.Broadcast(T.CreateTruncating(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV Constant<T, TV, TL>(double value) where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T> =>
        TL.Broadcast(T.CreateTruncating(value));
}

/// <summary>An activation named by a type, so that a loop specialised on it is compiled with only that function inlined.</summary>
internal interface IActivation
{
    static abstract ActivationKind Kind { get; }
}

/// <summary>What runs once the activation is known as a type (<see cref="Activations.Visit{TResult, TVisitor}"/>).</summary>
internal interface IActivationVisitor<TResult>
{
    TResult Visit<TActivation>() where TActivation : struct, IActivation;
}

/// <summary>The activations the fused forward passes compute, each as a type.</summary>
internal static class Activations
{
    /// <summary>visitor.Visit&lt;f&gt;() for the type of <paramref name="kind"/>; the identity's for a kind no pass computes.</summary>
    public static TResult Visit<TResult, TVisitor>(ActivationKind kind, TVisitor visitor) where TVisitor : IActivationVisitor<TResult> =>
        kind switch
        {
            ActivationKind.Sigmoid => visitor.Visit<Sigmoid>(),
            ActivationKind.SiLU => visitor.Visit<SiLU>(),
            ActivationKind.Tanh => visitor.Visit<Tanh>(),
            ActivationKind.ReLU => visitor.Visit<ReLU>(),
            ActivationKind.DecayNormaliser => visitor.Visit<DecayNormaliser>(),
            ActivationKind.LogSigmoid => visitor.Visit<LogSigmoid>(),
            ActivationKind.Softplus => visitor.Visit<Softplus>(),
            _ => visitor.Visit<Identity>(),
        };

    public readonly struct Identity : IActivation { public static ActivationKind Kind => ActivationKind.Identity; }

    public readonly struct Sigmoid : IActivation { public static ActivationKind Kind => ActivationKind.Sigmoid; }

    public readonly struct SiLU : IActivation { public static ActivationKind Kind => ActivationKind.SiLU; }

    public readonly struct Tanh : IActivation { public static ActivationKind Kind => ActivationKind.Tanh; }

    public readonly struct ReLU : IActivation { public static ActivationKind Kind => ActivationKind.ReLU; }

    public readonly struct DecayNormaliser : IActivation { public static ActivationKind Kind => ActivationKind.DecayNormaliser; }

    public readonly struct LogSigmoid : IActivation { public static ActivationKind Kind => ActivationKind.LogSigmoid; }

    public readonly struct Softplus : IActivation { public static ActivationKind Kind => ActivationKind.Softplus; }
}
