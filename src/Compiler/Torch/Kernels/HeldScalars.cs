using TorchSharp;

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
