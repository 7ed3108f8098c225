using System.Numerics;
using System.Runtime.CompilerServices;
using static Duality.Kernels.VectorRows;

namespace Duality.Kernels;

/// <summary>
/// The gradient of the log-decays per key channel of <see cref="GatedLinearAttentionFunction"/>, for one batch row and
/// head: <see cref="GatedLinearAttentionDecayGradient{T}"/>'s segments with every factor, product and sum taken channel by
/// channel. With A_j(s, u) = a~_(s+1)[j] ... a~_u[j], B = S~_(f-1) and E = D_(l+1) for the segment [f, l],
///   dl_t[j] = sum_(u in [t, l]) A_j(f-1, u) q_u[j] (B delta_u)[j]  +  A_j(f-1, l+1) B[j, :] . E[j, :]
///           + sum_(s in [f, t)) A_j(s, l+1) kk_s[j] (E v_s)[j]  +  sum_(s &lt; t &lt;= u) A_j(s, u) q_u[j] kk_s[j] (delta_u . v_s),
/// the decayed state entering step t against the state's gradient after it, row j, as sums of their own terms.
/// </summary>
internal sealed unsafe class GatedLinearAttentionKeyDecayGradient<T> : IDecayGradient<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private const int Segment = GatedLinearAttentionDecayGradient.Segment;

    private readonly int keys, width, columns, time;
    private readonly bool normalised;
    private readonly RentedArray<T> rentedEntering, rentedFactors, rentedFromState, rentedEntries;
    // per segment B^T (value rows of key entries, the normaliser's row last); per step a~_t, e^(g_t - m_t) and
    // q_t (B delta_t); per segment the scaled keys, the values with their column of ones, E^T, and per step of the
    // segment the running factors and sums
    private readonly T[] entering, factors, entries, fromState, keyRows, valueRows, returning, through, toEnd, weights, within, sums, product;

    public GatedLinearAttentionKeyDecayGradient(int keys, int width, int time, bool normalised)
    {
        (this.keys, this.width, this.time, this.normalised) = (keys, width, time, normalised);
        columns = width + (normalised ? 1 : 0);
        rentedEntering = new RentedArray<T>((long)(time + Segment - 1) / Segment * columns * keys);
        (rentedFactors, rentedFromState, rentedEntries) = (new RentedArray<T>((long)time * keys), new RentedArray<T>((long)time * keys), new RentedArray<T>(time));
        (entering, factors, fromState, entries) = (rentedEntering.Array, rentedFactors.Array, rentedFromState.Array, rentedEntries.Array);
        (keyRows, valueRows, returning) = (new T[Segment * keys], new T[Segment * columns], new T[columns * keys]);
        (through, toEnd, weights, within) = (new T[Segment * keys], new T[Segment * keys], new T[Segment * keys], new T[Segment * keys]);
        (sums, product) = (new T[keys], new T[keys]);
    }

    public void Dispose()
    {
        rentedEntering.Dispose();
        rentedFactors.Dispose();
        rentedFromState.Dispose();
        rentedEntries.Dispose();
    }

    /// <summary>Keeps B^T when step t starts a segment: the sweep forward's P = S~^T (value rows of key entries) and n~.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void KeepEntering(int t, T* p, T* n)
    {
        fixed (T* into = &entering[(long)(t / Segment) * columns * keys])
            Join(p, n, into);
    }

    /// <summary>Step t's factors a~_t, entry e^(g_t - m_t) and q_t (B delta_t) (delta with the normaliser's entry), on the way forward.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Forward(int t, T* a, T entry, T* q, T* delta)
    {
        entries[t] = entry;
        fixed (T* b = &entering[(long)(t / Segment) * columns * keys], f = &factors[(long)t * keys], y = &fromState[(long)t * keys])
        {
            new ReadOnlySpan<T>(a, keys).CopyTo(new Span<T>(f, keys));
            Transposed(b, keys, delta, y, columns, keys);
            Multiply(y, q, y, keys);
        }
    }

    /// <summary>
    /// dl over the segment ending at <paramref name="last"/>, when the sweep back reaches it: E^T is its Q = D^T (value rows
    /// of key entries) and dn the normaliser's column of D. q, k, v: step first's rows, stepping <paramref name="stride"/> rows
    /// per step; deltas: every step's delta (value + 1 entries); dl: step first's key row, stepping stride rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Backward(int last, T* q, T* k, T* v, long stride, T* deltas, T* e, T* dn, T* dl)
    {
        int first = last / Segment * Segment, count = last - first + 1;
        fixed (T* kk = keyRows, vv = valueRows, et = returning, b = &entering[(long)(first / Segment) * columns * keys], a = &factors[(long)first * keys],
               fs = &fromState[(long)first * keys], th = through, te = toEnd, w = weights, inside = within, y = sums, p = product)
        {
            Join(e, dn, et);
            for (int s = 0; s < count; s++)
            {
                Scale(k + s * stride * keys, entries[first + s], kk + s * keys, keys);
                new ReadOnlySpan<T>(v + s * stride * width, width).CopyTo(new Span<T>(vv + s * columns, width));
                if (normalised) vv[s * columns + width] = T.One;
            }
            // A_j(f-1, u) through each step, A_j(s, l+1) after each (a~_(l+1) = 0 past the last step: nothing comes back)
            new Span<T>(p, keys).Fill(T.One);
            for (int u = 0; u < count; u++)
            {
                Multiply(p, a + u * keys, p, keys);
                new ReadOnlySpan<T>(p, keys).CopyTo(new Span<T>(th + u * keys, keys));
            }
            if (last + 1 < time) fixed (T* next = &factors[(long)(last + 1) * keys]) new ReadOnlySpan<T>(next, keys).CopyTo(new Span<T>(y, keys));
            else new Span<T>(y, keys).Clear();
            for (int s = count - 1; s >= 0; s--)
            {
                new ReadOnlySpan<T>(y, keys).CopyTo(new Span<T>(te + s * keys, keys));
                Multiply(y, a + s * keys, y, keys);
            }
            // A_j(f-1, l+1) B[j, :] . E[j, :] = A_j(f-1, f) A_j(f, l+1) B . E, then the states' parts from the last step back
            Multiply(th, te, p, keys);
            new Span<T>(y, keys).Clear();
            for (int i = 0; i < columns; i++)
                for (int j = 0; j < keys; j++) y[j] += b[i * keys + j] * et[i * keys + j];
            Multiply(p, y, p, keys);
            new Span<T>(y, keys).Clear();
            for (int u = count - 1; u >= 0; u--)
            {
                T* row = dl + u * stride * keys;
                MultiplyAdd(th + u * keys, fs + u * keys, y, keys);
                Add(y, p, row, keys);
            }
            // the pairs s < u within the segment, W_j[u, s] = A_j(s, u) q_u[j] kk_s[j] (delta_u . v_s), added row by row
            // into sum_(s < t) W_j[u, s] for t <= u
            new Span<T>(inside, count * keys).Clear();
            for (int u = 1; u < count; u++)
            {
                T* qu = q + u * stride * keys, du = deltas + (long)(first + u) * (width + 1);
                new Span<T>(p, keys).Fill(T.One);
                for (int s = u - 1; s >= 0; s--) Weigh(p, a + (s + 1) * keys, kk + s * keys, Dot(du, vv + s * columns, columns), w + s * keys, keys);
                new Span<T>(y, keys).Clear();
                for (int t = 1; t <= u; t++) Gather(w + (t - 1) * keys, qu, y, inside + t * keys, keys);
            }
            // sum_(s < t) A_j(s, l+1) kk_s[j] (E v_s)[j], from the first step on
            new Span<T>(p, keys).Clear();
            for (int t = 0; t < count; t++)
            {
                T* row = dl + t * stride * keys;
                Add(row, p, row, keys);
                Add(row, inside + t * keys, row, keys);
                Transposed(et, keys, vv + t * columns, y, columns, keys);
                Multiply(y, kk + t * keys, y, keys);
                MultiplyAdd(y, te + t * keys, p, keys);
            }
        }
    }

    /// <summary>into = [p; n^T]: value rows of key entries, the normaliser's row last.</summary>
    private void Join(T* p, T* n, T* into)
    {
        new ReadOnlySpan<T>(p, width * keys).CopyTo(new Span<T>(into, width * keys));
        if (normalised) new ReadOnlySpan<T>(n, keys).CopyTo(new Span<T>(into + width * keys, keys));
    }

    /// <summary>decay *= a, then w = decay kk h, entry by entry: one pair's weights, the decay carried to the next earlier step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Weigh(T* decay, T* a, T* kk, T h, T* w, int count)
    {
        int i = 0;
        var scale = new Vector<T>(h);
        for (; i <= count - Vector<T>.Count; i += Vector<T>.Count)
        {
            var d = Vector.Load(decay + i) * Vector.Load(a + i);
            Vector.Store(d, decay + i);
            Vector.Store(d * Vector.Load(kk + i) * scale, w + i);
        }
        for (; i < count; i++)
        {
            decay[i] *= a[i];
            w[i] = decay[i] * kk[i] * h;
        }
    }

    /// <summary>sum += w q, then into += sum, entry by entry: the pairs before step t, added into t's sum.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Gather(T* w, T* q, T* sum, T* into, int count)
    {
        int i = 0;
        for (; i <= count - Vector<T>.Count; i += Vector<T>.Count)
        {
            var total = VectorFused.MultiplyAdd(Vector.Load(w + i), Vector.Load(q + i), Vector.Load(sum + i));
            Vector.Store(total, sum + i);
            Vector.Store(Vector.Load(into + i) + total, into + i);
        }
        for (; i < count; i++)
        {
            sum[i] += w[i] * q[i];
            into[i] += sum[i];
        }
    }
}
