using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>
/// The fill values and unit factors the kernels and modules hand libtorch, held by static fields. TorchSharp turns a number argument into a
/// <see cref="Scalar"/> that only its finaliser frees, and libtorch reads it only after allocating the result (a masked
/// fill copies its input first): a collection in between can free it while the call still needs it (c10's "Expected
/// false to be true" from <c>Scalar::toDouble</c>, or a value read from reused memory). A static field keeps these
/// reachable for the life of the process. <see cref="One"/> is the alpha of a sum in a per-step loop (TorchSharp's
/// <c>a + b</c> makes a new one each time).
/// </summary>
internal static class HeldScalars
{
    public static readonly Scalar Zero = 0.0.ToScalar(), One = 1.0.ToScalar(), NegativeInfinity = double.NegativeInfinity.ToScalar();

    /// <summary>0 or -inf as a held scalar.</summary>
    public static Scalar Of(double value) =>
        value == 0 ? Zero
        : double.IsNegativeInfinity(value) ? NegativeInfinity
        : throw new ArgumentOutOfRangeException(nameof(value), value, "only 0 and -inf are held");
}

/// <summary>
/// Arithmetic whose numbers outlive the call: TorchSharp's <c>a + b</c> passes a new Scalar 1 as alpha, <c>square()</c> a
/// new Scalar 2, and <c>x * c</c>, <c>x / c</c> and a comparison with a number a new Scalar of c, each freed only
/// by its finaliser, which a collection on another thread may run while libtorch still reads it. These hold the number
/// until libtorch returns.
/// </summary>
internal static class HeldArithmetic
{
    /// <summary>a + b.</summary>
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, HeldScalars.One);

    /// <summary>x^2 as x x (TorchSharp's square() is pow with a new Scalar 2; the same values and gradient).</summary>
    public static Tensor Squared(this Tensor x) => x.mul(x);

    /// <summary>x c.</summary>
    public static Tensor Times(this Tensor x, double c)
    {
        using var factor = c.ToScalar();
        return x.mul(factor);
    }

    /// <summary>x / c.</summary>
    public static Tensor Over(this Tensor x, double c)
    {
        using var divisor = c.ToScalar();
        return x.div(divisor);
    }

    /// <summary>start, start + 1, ..., start + count - 1 in float64 (arange with its bounds and step held).</summary>
    public static Tensor Positions(long start, long count, Device? device = null)
    {
        using Scalar first = start, end = start + count;
        return arange(first, end, HeldScalars.One, dtype: ScalarType.Float64, device: device);
    }

    /// <summary>x &lt;= c, entry by entry.</summary>
    public static Tensor IsAtMost(this Tensor x, double c)
    {
        using var bound = c.ToScalar();
        return x.le(bound);
    }
}
