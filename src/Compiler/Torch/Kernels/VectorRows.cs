using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Duality.Kernels;

/// <summary>Vectorised arithmetic on rows of raw storage (a vector at a time, the remainder one by one), for the kernels.</summary>
internal static unsafe class VectorRows
{
    /// <summary>The last <paramref name="count"/> elements (fewer than a vector) in a vector, zeros after them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Tail<T>(T* x, int count) where T : unmanaged, IFloatingPointIeee754<T>
    {
        Span<T> padded = stackalloc T[Vector<T>.Count];
        new ReadOnlySpan<T>(x, count).CopyTo(padded);
        return new Vector<T>(padded);
    }

    /// <summary>sum_i x_i y_i over i &lt; width, four chains of multiply-adds at once so that their latency overlaps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Dot<T>(T* x, T* y, int width) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = Vector<T>.Count, i = 0;
        Vector<T> sums = Vector<T>.Zero, sums1 = Vector<T>.Zero, sums2 = Vector<T>.Zero, sums3 = Vector<T>.Zero;
        for (; i <= width - 4 * n; i += 4 * n)
        {
            sums = VectorFused.MultiplyAdd(Vector.Load(x + i), Vector.Load(y + i), sums);
            sums1 = VectorFused.MultiplyAdd(Vector.Load(x + i + n), Vector.Load(y + i + n), sums1);
            sums2 = VectorFused.MultiplyAdd(Vector.Load(x + i + 2 * n), Vector.Load(y + i + 2 * n), sums2);
            sums3 = VectorFused.MultiplyAdd(Vector.Load(x + i + 3 * n), Vector.Load(y + i + 3 * n), sums3);
        }
        for (; i <= width - n; i += n) sums = VectorFused.MultiplyAdd(Vector.Load(x + i), Vector.Load(y + i), sums);
        var total = Vector.Sum((sums + sums1) + (sums2 + sums3));
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

    /// <summary>
    /// <see cref="Transposed{T}"/> for <paramref name="count"/> vectors at once: into_u = M^T x_u with x_u at x + u xStride and
    /// into_u at into + u intoStride. Four vectors share each load of M, so a product bound by its loads runs faster than
    /// four apart; the columns go two 512-bit vectors at a time where those run at full rate, then two Vector&lt;T&gt;.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TransposedMany<T>(T* m, int stride, int rows, int cols, T* x, long xStride, int count, T* into, long intoStride)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int u = 0;
        for (; u <= count - 4; u += 4)
        {
            T* xu = x + u * xStride, yu = into + u * intoStride;
            int j = 0;
            if (WideLanes<T>.Faster) j = FourColumns<T, Vector512<T>, WideLanes<T>>(m, stride, rows, cols, xu, xStride, yu, intoStride, j);
            j = FourColumns<T, Vector<T>, NativeLanes<T>>(m, stride, rows, cols, xu, xStride, yu, intoStride, j);
            for (int r = 0; r < 4 && j < cols; r++) Transposed(m + j, stride, xu + r * xStride, yu + r * intoStride + j, rows, cols - j);
        }
        for (; u < count; u++) Transposed(m, stride, x + u * xStride, into + u * intoStride, rows, cols);
    }

    /// <summary>Four vectors' products on the columns from j, two vectors of lanes at a time while two fit; returns the first column left.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FourColumns<T, TV, TLanes>(T* m, int stride, int rows, int cols, T* x, long xStride, T* into, long intoStride, int j)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TLanes : ILanes<TV, T>
    {
        int n = TLanes.Count;
        T* x0 = x, x1 = x0 + xStride, x2 = x1 + xStride, x3 = x2 + xStride;
        T* y0 = into, y1 = y0 + intoStride, y2 = y1 + intoStride, y3 = y2 + intoStride;
        for (; j <= cols - 2 * n; j += 2 * n)
        {
            TV a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
            for (int i = 0; i < rows; i++)
            {
                T* row = m + i * stride + j;
                TV m0 = TLanes.Load(row), m1 = TLanes.Load(row + n);
                TV b0 = TLanes.Broadcast(x0[i]), b1 = TLanes.Broadcast(x1[i]), b2 = TLanes.Broadcast(x2[i]), b3 = TLanes.Broadcast(x3[i]);
                a00 = TLanes.MultiplyAdd(b0, m0, a00); a01 = TLanes.MultiplyAdd(b0, m1, a01);
                a10 = TLanes.MultiplyAdd(b1, m0, a10); a11 = TLanes.MultiplyAdd(b1, m1, a11);
                a20 = TLanes.MultiplyAdd(b2, m0, a20); a21 = TLanes.MultiplyAdd(b2, m1, a21);
                a30 = TLanes.MultiplyAdd(b3, m0, a30); a31 = TLanes.MultiplyAdd(b3, m1, a31);
            }
            TLanes.Store(a00, y0 + j); TLanes.Store(a01, y0 + j + n);
            TLanes.Store(a10, y1 + j); TLanes.Store(a11, y1 + j + n);
            TLanes.Store(a20, y2 + j); TLanes.Store(a21, y2 + j + n);
            TLanes.Store(a30, y3 + j); TLanes.Store(a31, y3 + j + n);
        }
        return j;
    }

    /// <summary>
    /// into[i intoStride + r] = m[r cols + i] for r &lt; rows, i &lt; cols: the rows of m laid across. Its sizes are arguments,
    /// not fields read in the loop (a store through a pointer would make the compiler read a field again per entry).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Transpose<T>(T* m, int rows, int cols, T* into, int intoStride) where T : unmanaged
    {
        for (int r = 0; r < rows; r++)
        {
            T* row = m + (long)r * cols, column = into + r;
            for (int i = 0; i < cols; i++) column[(long)i * intoStride] = row[i];
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
