using System.Globalization;
using Duality.Ir;
using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>
/// Refuses a tensor too large for the machine before libtorch is asked for it: when an allocation fails inside
/// a libtorch operation the process aborts, and no .NET handler sees it. A size known in advance (attention
/// scores are batch x heads x T x T) is checked here and reported as a <see cref="GraphException"/> naming the
/// node, the size in GB and the way around it.
/// </summary>
internal static class AllocationGuard
{
    /// <summary>A quarter of the memory this process may use: physical memory, or the container's limit when lower.</summary>
    public static long DefaultLimitBytes { get; } = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4;

    /// <summary>
    /// Throws when <paramref name="elements"/> of <paramref name="dtype"/> exceed <paramref name="limitBytes"/>
    /// (<see cref="DefaultLimitBytes"/> when not given). <paramref name="what"/> names the tensor, e.g.
    /// "attention scores [1, 2, 100000, 100000]"; <paramref name="hint"/> says how to avoid it.
    /// </summary>
    public static void CheckAllocation(long elements, ScalarType dtype, string node, string what, long? limitBytes = null,
        string hint = "run a shorter sequence or a smaller batch at a time")
    {
        var limit = limitBytes ?? DefaultLimitBytes;
        var bytes = (double)elements * ElementBytes(dtype);
        if (bytes <= limit) return;
        throw new GraphException(new Diagnostic("tensor too large", node, what, hint,
            Expected: $"at most {Gigabytes(limit)} in one tensor",
            Received: string.Create(CultureInfo.InvariantCulture, $"{Gigabytes(bytes)} ({elements:N0} {dtype} elements)")));
    }

    /// <summary>"80.0 GB" (10^9 bytes).</summary>
    public static string Gigabytes(double bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1e9:F1} GB");

    private static int ElementBytes(ScalarType dtype) => dtype switch
    {
        ScalarType.Bool or ScalarType.Byte or ScalarType.Int8 => 1,
        ScalarType.Int16 or ScalarType.Float16 or ScalarType.BFloat16 => 2,
        ScalarType.Int32 or ScalarType.Float32 => 4,
        ScalarType.ComplexFloat64 => 16,
        _ => 8,
    };
}
