using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>
/// The skip over an attention's value (Mamba-2's D x): out_t = y_t + D * v_t, head by head, in one pass, and its reverse
/// pass dv_t += D * dy_t, dD = sum over the rows of dy_t * v_t in one more, where the composite form takes a product, a
/// sum and, backward, two products, a reduction and the gradient's accumulation. y, out, dy, dv: [rows, heads width]
/// contiguous (out may be y); v: head h of row r from v + r stride + offsets[h], read where it lies; D, dD: [heads width].
/// D v is rounded before the sum, as the product and the sum node by node round it. Parallel over ranges of rows
/// (<see cref="RowRanges"/>); each range sums its share of dD in blocks of <see cref="Block"/> rows.
/// </summary>
internal static unsafe class ValueSkip
{
    /// <summary>Rows summed into a block's share of dD before it joins its range's sum (rounding grows with the block, not the rows).</summary>
    public const int Block = 64;

    public static void Forward<T>(T* y, T* v, GatedLinearAttentionLoop.Rows value, T* factors, T* output, long rows, int heads, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (py, pv, pf, po, offsets) = ((nint)y, (nint)v, (nint)factors, (nint)output, value.Offsets);
        RowRanges.Run(RowRanges.Count(rows, (long)heads * width), rows, (_, first, end) =>
            ForwardRows((T*)py, (T*)pv, value.Stride, offsets, (T*)pf, (T*)po, first, end, heads, width));
    }

    /// <summary>dv += D dy in place, and dD (overwritten).</summary>
    public static void Backward<T>(T* dy, T* v, GatedLinearAttentionLoop.Rows value, T* factors, T* dv, T* dFactors, long rows, int heads, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var all = heads * width;
        var ranges = RowRanges.Count(rows, all);
        // per range: its share of dD, then its current block's
        var shares = new T[2 * ranges * all];
        var (pdy, pv, pf, pdv, offsets) = ((nint)dy, (nint)v, (nint)factors, (nint)dv, value.Offsets);
        fixed (T* s = shares)
        {
            var ps = (nint)s;
            RowRanges.Run(ranges, rows, (r, first, end) =>
                BackwardRows((T*)pdy, (T*)pv, value.Stride, offsets, (T*)pf, (T*)pdv, (T*)ps + 2L * r * all, first, end, heads, width));
        }
        var sum = new Span<T>(dFactors, all);
        shares.AsSpan(0, all).CopyTo(sum);
        for (int r = 1; r < ranges; r++)
            for (int c = 0; c < all; c++) sum[c] += shares[2 * r * all + c];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRows<T>(T* y, T* v, long stride, int[] offsets, T* factors, T* output, long first, long end, int heads, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = Vector<T>.Count, all = heads * width;
        for (long r = first; r < end; r++)
            for (int h = 0; h < heads; h++)
            {
                T* yr = y + r * all + h * width, vr = v + r * stride + offsets[h], fr = factors + h * width, o = output + r * all + h * width;
                int c = 0;
                for (; c <= width - n; c += n) Vector.Store(Vector.Load(yr + c) + Vector.Load(fr + c) * Vector.Load(vr + c), o + c);
                for (; c < width; c++) o[c] = yr[c] + fr[c] * vr[c];
            }
    }

    /// <summary>Rows [first, end): dv += D dy, and their sum of dy v into <paramref name="share"/> (overwritten), block by block
    /// (each block's sum in the <c>heads width</c> entries after the share).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardRows<T>(T* dy, T* v, long stride, int[] offsets, T* factors, T* dv, T* share, long first, long end, int heads, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = Vector<T>.Count, all = heads * width;
        new Span<T>(share, all).Clear();
        var block = share + all;
        for (long from = first; from < end; from += Block)
        {
            new Span<T>(block, all).Clear();
            for (long r = from; r < Math.Min(from + Block, end); r++)
                for (int h = 0; h < heads; h++)
                {
                    T* gr = dy + r * all + h * width, vr = v + r * stride + offsets[h], fr = factors + h * width, dr = dv + r * all + h * width,
                        br = block + h * width;
                    int c = 0;
                    for (; c <= width - n; c += n)
                    {
                        var g = Vector.Load(gr + c);
                        Vector.Store(Vector.Load(dr + c) + Vector.Load(fr + c) * g, dr + c);
                        Vector.Store(Vector.Load(br + c) + g * Vector.Load(vr + c), br + c);
                    }
                    for (; c < width; c++) (dr[c], br[c]) = (dr[c] + fr[c] * gr[c], br[c] + gr[c] * vr[c]);
                }
            for (int c = 0; c < all; c++) share[c] += block[c];
        }
    }
}
