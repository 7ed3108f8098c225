using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>Vectorised arithmetic on rows of raw storage (a vector at a time, the remainder one by one), for the kernels.</summary>
internal static unsafe class VectorRows
{
    /// <summary>sum_i x_i y_i over i &lt; width.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Dot<T>(T* x, T* y, int width) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int i = 0;
        var sums = Vector<T>.Zero;
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count) sums = VectorFused.MultiplyAdd(Vector.Load(x + i), Vector.Load(y + i), sums);
        var total = Vector.Sum(sums);
        for (; i < width; i++) total = T.FusedMultiplyAdd(x[i], y[i], total);
        return total;
    }

    /// <summary>into = factor x (into may be x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale<T>(T* x, T factor, T* into, int width) where T : unmanaged, INumber<T>
    {
        int i = 0;
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count) Vector.Store(Vector.Load(x + i) * factor, into + i);
        for (; i < width; i++) into[i] = x[i] * factor;
    }

    /// <summary>into += factor x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Accumulate<T>(T* x, T factor, T* into, int width) where T : unmanaged, INumber<T>
    {
        int i = 0;
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
            Vector.Store(VectorFused.MultiplyAdd(new Vector<T>(factor), Vector.Load(x + i), Vector.Load(into + i)), into + i);
        for (; i < width; i++) into[i] += x[i] * factor;
    }

    /// <summary>Asks for the cache lines of x[0 .. count) ahead of their use.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Prefetch<T>(T* x, int count) where T : unmanaged
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        for (byte* line = (byte*)x, end = (byte*)(x + count); line < end; line += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch0(line);
    }
}
