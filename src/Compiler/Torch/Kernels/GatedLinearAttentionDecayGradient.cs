using System.Numerics;
using System.Runtime.CompilerServices;
using static Duality.Kernels.VectorRows;

namespace Duality.Kernels;

/// <summary>
/// The gradient of one log-decay per head of <see cref="GatedLinearAttentionFunction"/>, for one batch row and head, from
/// what the reverse pass's sweeps hold. In the loop's frame (factors a~_t, scaled keys kk_t, delta_t, v and delta with
/// the normaliser's column when normalised) dl_t = a~_t &lt;S~_(t-1), D_t&gt;, the decayed state entering step t against
/// the state's gradient after it. In segments [f, l] of <see cref="GatedLinearAttentionDecayGradient.Segment"/> steps, with B = S~_(f-1) (kept by the sweep
/// forward as it passes f) and E = D_(l+1) (what the sweep back holds as it reaches l),
///   dl_t = sum_(u in [t, l]) A(f-1, u) q_u^T B delta_u  +  A(f-1, l+1) &lt;B, E&gt;
///        + sum_(s in [f, t)) A(s, l+1) kk_s^T E v_s  +  sum_(s &lt; t &lt;= u) A(s, u) (q_u . kk_s) (delta_u . v_s),
/// A(s, u) = a~_(s+1) ... a~_u, products of factors at most 1. Every term is a product of its own pair's factors and every
/// sum runs over terms that belong to it, none added only to be subtracted: a strong decay's gradient is 0, not the
/// rounding of larger terms (as sum_(r &gt;= t) q_r dq_r - k_r dk_r would leave). Per step it costs two products of a
/// vector with a [value, key] matrix that stays in cache and the segment's pairs, all formed when the sweep back reaches
/// the segment, four steps to each pass over the matrix (<see cref="VectorRows.TransposedMany{T}"/>); memory
/// O(T / Segment key value).
/// </summary>
internal sealed unsafe class GatedLinearAttentionDecayGradient<T> : SegmentedDecayGradient<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    // per step a~_t; per segment the scaled keys laid across (key rows of step entries), the products of a matrix with
    // each step's vector, the pairs' key dots and weights
    private readonly RentedArray<T> rentedFactors;
    private readonly T[] factors, keysAcross, products, keyDots, pairs;

    public GatedLinearAttentionDecayGradient(int keys, int width, int time, bool normalised) : base(keys, width, time, normalised)
    {
        rentedFactors = new RentedArray<T>(time);
        factors = rentedFactors.Array;
        (keysAcross, products) = (new T[keys * Segment], new T[Segment * keys]);
        (keyDots, pairs) = (new T[Segment * Segment], new T[Segment * Segment]);
    }

    public override void Dispose()
    {
        base.Dispose();
        rentedFactors.Dispose();
    }

    /// <summary>Step t's factor a~_t (every entry of <paramref name="a"/> alike) and entry e^(g_t - m_t), on the way forward.</summary>
    public override void Forward(int t, T* a, T entry) => (factors[t], entries[t]) = (a[0], entry);

    /// <summary>
    /// dl over the segment ending at <paramref name="last"/>, when the sweep back reaches it: E^T is its Q = D^T (value rows
    /// of key entries) and dn the normaliser's column of D. q, k, v, dl: step first's rows, <paramref name="steps"/> apart;
    /// deltas: every step's delta (value + 1 entries).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override void Backward(int last, T* q, T* k, T* v, Strides steps, T* deltas, T* e, T* dn, T* dl)
    {
        int first = last / Segment * Segment, count = last - first + 1, keys = this.keys, columns = this.columns;
        var next = last + 1 < time ? factors[last + 1] : T.Zero;
        LoadSegment(first, count, k, v, steps, deltas, e, dn);
        fixed (T* kk = keyRows, vv = valueRows, kkAcross = keysAcross, et = returning, z = products,
               b = &entering[(long)(first / Segment) * columns * keys], g = keyDots, h = valueDots, w = pairs)
        {
            Transpose(kk, count, keys, kkAcross, Segment);
            T* firstDelta = deltas + (long)first * (width + 1);
            // the pairs s < u within the segment: W[u, s] = A(s, u) (q_u . kk_s) (delta_u . v_s), a row at a time with
            // A(s, u) = A(s, u-1) a~_u across it
            TransposedMany(kkAcross, Segment, keys, count, q, steps.Query, count, g, Segment);
            Span<T> running = stackalloc T[Segment];
            running.Clear();
            fixed (T* decays = running, step = &factors[first])
                for (int u = 1; u < count; u++)
                {
                    decays[u - 1] = T.One;
                    T* row = w + u * Segment;
                    Scale(decays, step[u], decays, u);
                    Multiply(decays, g + u * Segment, row, u);
                    Multiply(row, h + u * Segment, row, u);
                }
            var across = Dot(b, et, columns * keys);
            // sum over u >= t of A(f-1, u) q_u^T B delta_u, from the last step back
            TransposedMany(b, keys, columns, keys, firstDelta, width + 1, count, z, keys);
            Span<T> fromState = stackalloc T[count];
            for (int u = 0; u < count; u++) fromState[u] = Dot(z + u * keys, q + u * steps.Query, keys);
            var fromStates = T.Zero;
            Span<T> throughStep = stackalloc T[count];
            var through = T.One;
            for (int u = 0; u < count; u++) throughStep[u] = through *= factors[first + u];
            var whole = through * next;
            for (int u = count - 1; u >= 0; u--)
            {
                fromStates += throughStep[u] * fromState[u];
                dl[u * steps.Terms] = fromStates + whole * across;
            }
            // sum over s < t of A(s, l+1) kk_s^T E v_s, and over s < t <= u of W[u, s]: from the last row up, the columns'
            // sums C[s] = sum_(u >= t) W[u, s] for s < t, and t's part their sum
            Span<T> within = stackalloc T[count];
            within.Clear();
            Span<T> columnSums = stackalloc T[Segment];
            columnSums.Clear();
            fixed (T* sums = columnSums)
                for (int t = count - 1; t >= 1; t--) within[t] = AddAndSum(sums, w + t * Segment, t);
            Span<T> toEnd = stackalloc T[count];
            var after = next;
            for (int s = count - 1; s >= 0; s--)
            {
                toEnd[s] = after;
                after *= factors[first + s];
            }
            TransposedMany(et, keys, columns, keys, vv, columns, count, z, keys);
            var toGradient = T.Zero;
            for (int t = 0; t < count; t++)
            {
                dl[t * steps.Terms] += toGradient + within[t];
                if (toEnd[t] != T.Zero) toGradient += toEnd[t] * Dot(z + t * keys, kk + t * keys, keys);
            }
        }
    }

    /// <summary>For s &lt; n: sums[s] += w[s]; returns the sum of sums[s].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T AddAndSum(T* sums, T* w, int n)
    {
        int s = 0;
        var total = Vector<T>.Zero;
        for (; s <= n - Vector<T>.Count; s += Vector<T>.Count)
        {
            var sum = Vector.Load(sums + s) + Vector.Load(w + s);
            Vector.Store(sum, sums + s);
            total += sum;
        }
        var result = Vector.Sum(total);
        for (; s < n; s++) result += sums[s] += w[s];
        return result;
    }
}

/// <summary>The segments of <see cref="GatedLinearAttentionDecayGradient{T}"/>.</summary>
internal static class GatedLinearAttentionDecayGradient
{
    /// <summary>Steps per segment: a multiple of the loops' four steps per pass.</summary>
    public const int Segment = 32;
}

/// <summary>
/// The log-decays' gradient formed beside the reverse pass's sweeps (per head or per key channel): it keeps the state
/// entering each segment from the sweep forward and each step's factors on the way, and forms a segment's gradient when
/// the sweep back reaches its last step, from the states, the inputs' rows and the steps' deltas. What both forms keep
/// and read alike is here: B^T per segment, each step's entry, and a segment's E^T, scaled keys, values and value dots.
/// </summary>
internal abstract unsafe class SegmentedDecayGradient<T> : IDisposable where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Elements between consecutive steps' rows of q, k, v and dl.</summary>
    public readonly record struct Strides(long Query, long Key, long Value, long Terms);

    protected const int Segment = GatedLinearAttentionDecayGradient.Segment;

    protected readonly int keys, width, columns, time;
    protected readonly bool normalised;
    // per segment B^T (value rows of key entries, the normaliser's row last); per step e^(g_t - m_t); per segment the
    // scaled keys, the values with their column of ones (rows, and across: value rows of step entries), E^T, and the
    // pairs' value dots delta_u . v_s
    private readonly RentedArray<T> rentedEntering, rentedEntries;
    protected readonly T[] entering, entries, keyRows, valueRows, valuesAcross, returning, valueDots;

    protected SegmentedDecayGradient(int keys, int width, int time, bool normalised)
    {
        (this.keys, this.width, this.time, this.normalised) = (keys, width, time, normalised);
        columns = width + (normalised ? 1 : 0);
        rentedEntering = new RentedArray<T>((long)(time + Segment - 1) / Segment * columns * keys);
        rentedEntries = new RentedArray<T>(time);
        (entering, entries) = (rentedEntering.Array, rentedEntries.Array);
        (keyRows, valueRows, valuesAcross, returning) = (new T[Segment * keys], new T[Segment * columns], new T[columns * Segment], new T[columns * keys]);
        valueDots = new T[Segment * Segment];
    }

    public virtual void Dispose()
    {
        rentedEntering.Dispose();
        rentedEntries.Dispose();
    }

    /// <summary>Keeps B^T when step t starts a segment: the sweep forward's P = S~^T (value rows of key entries) and n~.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void KeepEntering(int t, T* p, T* n)
    {
        fixed (T* into = &entering[(long)(t / Segment) * columns * keys])
            Join(p, n, into);
    }

    /// <summary>Step t's factors a~_t (key entries) and its entry e^(g_t - m_t), on the way forward.</summary>
    public abstract void Forward(int t, T* a, T entry);

    /// <summary>
    /// dl over the segment ending at <paramref name="last"/>: e is E^T = D_(last+1)^T (value rows of key entries) and dn its
    /// normaliser's column; q, k, v, dl: step first's rows, <paramref name="steps"/> apart; deltas: every step's delta
    /// (value + 1 entries).
    /// </summary>
    public abstract void Backward(int last, T* q, T* k, T* v, Strides steps, T* deltas, T* e, T* dn, T* dl);

    /// <summary>
    /// The segment [first, first + count)'s rows both forms read: E^T with the normaliser's row (returning), the scaled
    /// keys kk_s (keyRows), the values with their column of ones (valueRows, and valuesAcross) and the value dots
    /// delta_u . v_s (valueDots, Segment apart).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    protected void LoadSegment(int first, int count, T* k, T* v, Strides steps, T* deltas, T* e, T* dn)
    {
        int keys = this.keys, width = this.width, columns = this.columns;
        fixed (T* kk = keyRows, vv = valueRows, vvAcross = valuesAcross, et = returning, h = valueDots, entry = &entries[first])
        {
            Join(e, dn, et);
            for (int s = 0; s < count; s++)
            {
                Scale(k + s * steps.Key, entry[s], kk + s * keys, keys);
                new ReadOnlySpan<T>(v + s * steps.Value, width).CopyTo(new Span<T>(vv + s * columns, width));
                if (normalised) vv[s * columns + width] = T.One;
            }
            Transpose(vv, count, columns, vvAcross, Segment);
            TransposedMany(vvAcross, Segment, columns, count, deltas + (long)first * (width + 1), width + 1, count, h, Segment);
        }
    }

    /// <summary>into = [p; n^T]: value rows of key entries, the normaliser's row last.</summary>
    private void Join(T* p, T* n, T* into)
    {
        new ReadOnlySpan<T>(p, width * keys).CopyTo(new Span<T>(into, width * keys));
        if (normalised) new ReadOnlySpan<T>(n, keys).CopyTo(new Span<T>(into + width * keys, keys));
    }
}
