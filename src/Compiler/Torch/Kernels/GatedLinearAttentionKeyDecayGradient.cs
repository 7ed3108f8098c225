using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
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
internal sealed unsafe class GatedLinearAttentionKeyDecayGradient<T> : SegmentedDecayGradient<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    // per step a~_t; per segment the products of a matrix with each step's vector, and per step of the segment the
    // running factors, the state's parts and the pairs' weights and sums
    private readonly RentedArray<T> rentedFactors;
    private readonly T[] factors, products, fromState, through, toEnd, weights, within, sums, product;

    public GatedLinearAttentionKeyDecayGradient(int keys, int width, int time, bool normalised) : base(keys, width, time, normalised)
    {
        rentedFactors = new RentedArray<T>((long)time * keys);
        factors = rentedFactors.Array;
        (products, fromState) = (new T[Segment * keys], new T[Segment * keys]);
        (through, toEnd, weights, within) = (new T[Segment * keys], new T[Segment * keys], new T[Segment * keys], new T[Segment * keys]);
        (sums, product) = (new T[keys], new T[keys]);
    }

    public override void Dispose()
    {
        base.Dispose();
        rentedFactors.Dispose();
    }

    /// <summary>Step t's factors a~_t and entry e^(g_t - m_t), on the way forward.</summary>
    public override void Forward(int t, T* a, T entry)
    {
        entries[t] = entry;
        fixed (T* into = &factors[(long)t * keys]) new ReadOnlySpan<T>(a, keys).CopyTo(new Span<T>(into, keys));
    }

    /// <summary>
    /// dl over the segment ending at <paramref name="last"/>, when the sweep back reaches it: E^T is its Q = D^T (value rows
    /// of key entries) and dn the normaliser's column of D. q, k, v, dl (key rows): step first's rows, <paramref name="steps"/>
    /// apart; deltas: every step's delta (value + 1 entries).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override void Backward(int last, T* q, T* k, T* v, Strides steps, T* deltas, T* e, T* dn, T* dl)
    {
        int first = last / Segment * Segment, count = last - first + 1;
        LoadSegment(first, count, k, v, steps, deltas, e, dn);
        fixed (T* kk = keyRows, vv = valueRows, et = returning, z = products, h = valueDots, fs = fromState,
               b = &entering[(long)(first / Segment) * columns * keys], a = &factors[(long)first * keys],
               th = through, te = toEnd, w = weights, inside = within, y = sums, p = product)
        {
            T* firstDelta = deltas + (long)first * (width + 1);
            // q_u (B delta_u) for each step
            TransposedMany(b, keys, columns, keys, firstDelta, width + 1, count, fs, keys);
            for (int u = 0; u < count; u++) Multiply(fs + u * keys, q + u * steps.Query, fs + u * keys, keys);
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
            for (int i = 0; i < columns; i++) MultiplyAdd(b + i * keys, et + i * keys, y, keys);
            Multiply(p, y, p, keys);
            new Span<T>(y, keys).Clear();
            for (int u = count - 1; u >= 0; u--)
            {
                T* row = dl + u * steps.Terms;
                MultiplyAdd(th + u * keys, fs + u * keys, y, keys);
                Add(y, p, row, keys);
            }
            // the pairs s < u within the segment, W_j[u, s] = A_j(s, u) q_u[j] kk_s[j] (delta_u . v_s), summed into
            // sum_(s < t) W_j[u, s] for t <= u
            new Span<T>(inside, count * keys).Clear();
            int j = 0;
            if (WideLanes<T>.Faster) j = Pairs<Vector512<T>, WideLanes<T>>(a, q, steps.Query, kk, h, w, inside, count, j);
            j = Pairs<Vector<T>, NativeLanes<T>>(a, q, steps.Query, kk, h, w, inside, count, j);
            for (; j < keys; j++) Pairs(a, q, steps.Query, kk, h, inside, count, j);
            // sum_(s < t) A_j(s, l+1) kk_s[j] (E v_s)[j], from the first step on
            TransposedMany(et, keys, columns, keys, vv, columns, count, z, keys);
            new Span<T>(p, keys).Clear();
            for (int t = 0; t < count; t++)
            {
                T* row = dl + t * steps.Terms;
                Add(row, p, row, keys);
                Add(row, inside + t * keys, row, keys);
                Multiply(z + t * keys, kk + t * keys, y, keys);
                MultiplyAdd(y, te + t * keys, p, keys);
            }
        }
    }

    /// <summary>
    /// The pairs' sums into <paramref name="inside"/> on the key channels from j, a vector of lanes at a time while one fits;
    /// returns the first channel left. Per step u, from the step before it back: p = A_j(s, u), the weights w_s = p kk_s h[u, s]
    /// (kept), then forward the running sum of w_s q_u added into each later step's row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Pairs<TV, TLanes>(T* a, T* q, long qStride, T* kk, T* h, T* w, T* inside, int count, int j)
        where TV : struct where TLanes : ILanes<TV, T>
    {
        int n = TLanes.Count, keys = this.keys;
        // two vectors of channels at a time while two fit: two independent chains of products and sums each
        for (; j <= keys - 2 * n; j += 2 * n)
            for (int u = 1; u < count; u++)
            {
                TV p0 = TLanes.Broadcast(T.One), p1 = p0;
                for (int s = u - 1; s >= 0; s--)
                {
                    T* carried = a + (s + 1) * keys + j, keyRow = kk + s * keys + j;
                    p0 = TLanes.Multiply(p0, TLanes.Load(carried));
                    p1 = TLanes.Multiply(p1, TLanes.Load(carried + n));
                    var dots = TLanes.Broadcast(h[u * Segment + s]);
                    TLanes.Store(TLanes.Multiply(TLanes.Multiply(p0, TLanes.Load(keyRow)), dots), w + s * 2 * n);
                    TLanes.Store(TLanes.Multiply(TLanes.Multiply(p1, TLanes.Load(keyRow + n)), dots), w + s * 2 * n + n);
                }
                T* query = q + u * qStride + j;
                TV q0 = TLanes.Load(query), q1 = TLanes.Load(query + n), sum0 = default, sum1 = default;
                for (int t = 1; t <= u; t++)
                {
                    sum0 = TLanes.MultiplyAdd(TLanes.Load(w + (t - 1) * 2 * n), q0, sum0);
                    sum1 = TLanes.MultiplyAdd(TLanes.Load(w + (t - 1) * 2 * n + n), q1, sum1);
                    T* cell = inside + t * keys + j;
                    TLanes.Store(TLanes.Add(TLanes.Load(cell), sum0), cell);
                    TLanes.Store(TLanes.Add(TLanes.Load(cell + n), sum1), cell + n);
                }
            }
        for (; j <= keys - n; j += n)
            for (int u = 1; u < count; u++)
            {
                var p = TLanes.Broadcast(T.One);
                for (int s = u - 1; s >= 0; s--)
                {
                    p = TLanes.Multiply(p, TLanes.Load(a + (s + 1) * keys + j));
                    TLanes.Store(TLanes.Multiply(TLanes.Multiply(p, TLanes.Load(kk + s * keys + j)), TLanes.Broadcast(h[u * Segment + s])), w + s * n);
                }
                TV qu = TLanes.Load(q + u * qStride + j), sum = default;
                for (int t = 1; t <= u; t++)
                {
                    sum = TLanes.MultiplyAdd(TLanes.Load(w + (t - 1) * n), qu, sum);
                    T* cell = inside + t * keys + j;
                    TLanes.Store(TLanes.Add(TLanes.Load(cell), sum), cell);
                }
            }
        return j;
    }

    /// <summary><see cref="Pairs{TV, TLanes}"/> on key channel j alone.</summary>
    private void Pairs(T* a, T* q, long qStride, T* kk, T* h, T* inside, int count, int j)
    {
        Span<T> weight = stackalloc T[Segment];
        int keys = this.keys;
        for (int u = 1; u < count; u++)
        {
            var p = T.One;
            for (int s = u - 1; s >= 0; s--)
            {
                p *= a[(s + 1) * keys + j];
                weight[s] = p * kk[s * keys + j] * h[u * Segment + s];
            }
            T qu = q[u * qStride + j], sum = T.Zero;
            for (int t = 1; t <= u; t++)
            {
                sum = T.FusedMultiplyAdd(weight[t - 1], qu, sum);
                inside[t * keys + j] += sum;
            }
        }
    }
}
