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

    /// <summary>y = M^T x for M of <paramref name="rows"/> rows of <paramref name="cols"/> entries, <paramref name="stride"/>
    /// apart: y[j] = sum_i x[i] M[i, j].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Transposed<T>(T* m, int stride, T* x, T* y, int rows, int cols) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = Vector<T>.Count, j = 0;
        // eight (or four) chains of fused multiply-adds at once, so that their latency overlaps
        for (; j <= cols - 8 * n; j += 8 * n)
        {
            Vector<T> y0 = default, y1 = default, y2 = default, y3 = default, y4 = default, y5 = default, y6 = default, y7 = default;
            for (int i = 0; i < rows; i++)
            {
                T* row = m + i * stride + j;
                var xi = new Vector<T>(x[i]);
                y0 = VectorFused.MultiplyAdd(xi, Vector.Load(row), y0);
                y1 = VectorFused.MultiplyAdd(xi, Vector.Load(row + n), y1);
                y2 = VectorFused.MultiplyAdd(xi, Vector.Load(row + 2 * n), y2);
                y3 = VectorFused.MultiplyAdd(xi, Vector.Load(row + 3 * n), y3);
                y4 = VectorFused.MultiplyAdd(xi, Vector.Load(row + 4 * n), y4);
                y5 = VectorFused.MultiplyAdd(xi, Vector.Load(row + 5 * n), y5);
                y6 = VectorFused.MultiplyAdd(xi, Vector.Load(row + 6 * n), y6);
                y7 = VectorFused.MultiplyAdd(xi, Vector.Load(row + 7 * n), y7);
            }
            Vector.Store(y0, y + j); Vector.Store(y1, y + j + n); Vector.Store(y2, y + j + 2 * n); Vector.Store(y3, y + j + 3 * n);
            Vector.Store(y4, y + j + 4 * n); Vector.Store(y5, y + j + 5 * n); Vector.Store(y6, y + j + 6 * n); Vector.Store(y7, y + j + 7 * n);
        }
        for (; j <= cols - 4 * n; j += 4 * n)
        {
            Vector<T> y0 = default, y1 = default, y2 = default, y3 = default;
            for (int i = 0; i < rows; i++)
            {
                T* row = m + i * stride + j;
                var xi = new Vector<T>(x[i]);
                y0 = VectorFused.MultiplyAdd(xi, Vector.Load(row), y0);
                y1 = VectorFused.MultiplyAdd(xi, Vector.Load(row + n), y1);
                y2 = VectorFused.MultiplyAdd(xi, Vector.Load(row + 2 * n), y2);
                y3 = VectorFused.MultiplyAdd(xi, Vector.Load(row + 3 * n), y3);
            }
            Vector.Store(y0, y + j); Vector.Store(y1, y + j + n); Vector.Store(y2, y + j + 2 * n); Vector.Store(y3, y + j + 3 * n);
        }
        for (; j <= cols - n; j += n)
        {
            Vector<T> y0 = default;
            for (int i = 0; i < rows; i++) y0 = VectorFused.MultiplyAdd(new Vector<T>(x[i]), Vector.Load(m + i * stride + j), y0);
            Vector.Store(y0, y + j);
        }
        for (; j < cols; j++)
        {
            var total = T.Zero;
            for (int i = 0; i < rows; i++) total += x[i] * m[i * stride + j];
            y[j] = total;
        }
    }

    /// <summary>into = x y, entry by entry (into may be x or y).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Multiply<T>(T* x, T* y, T* into, int count) where T : unmanaged, INumber<T>
    {
        int i = 0;
        for (; i <= count - Vector<T>.Count; i += Vector<T>.Count) Vector.Store(Vector.Load(x + i) * Vector.Load(y + i), into + i);
        for (; i < count; i++) into[i] = x[i] * y[i];
    }

    /// <summary>into = x + y, entry by entry (into may be x or y).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Add<T>(T* x, T* y, T* into, int count) where T : unmanaged, INumber<T>
    {
        int i = 0;
        for (; i <= count - Vector<T>.Count; i += Vector<T>.Count) Vector.Store(Vector.Load(x + i) + Vector.Load(y + i), into + i);
        for (; i < count; i++) into[i] = x[i] + y[i];
    }

    /// <summary>into += x y, entry by entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void MultiplyAdd<T>(T* x, T* y, T* into, int count) where T : unmanaged, INumber<T>
    {
        int i = 0;
        for (; i <= count - Vector<T>.Count; i += Vector<T>.Count)
            Vector.Store(VectorFused.MultiplyAdd(Vector.Load(x + i), Vector.Load(y + i), Vector.Load(into + i)), into + i);
        for (; i < count; i++) into[i] += x[i] * y[i];
    }
}
