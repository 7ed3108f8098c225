using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using static Duality.Kernels.VectorRows;

namespace Duality.Kernels;

/// <summary>
/// Gated linear attention as its recurrent form, fused over time per batch row and head (no gradients):
///   S_t = diag(a_t) S_{t-1} + e^(g_t - m_t) k_t v_t^T,   o_t = S_t^T q_t,   a_t[j] = e^(l_t[j] + m_{t-1} - m_t),
///   m_t = max(max_j l_t[j] + m_{t-1}, g_t)   (xLSTM's stabiliser; m = 0 without an input gate),
/// so S is kept as S e^(-m) and no exponential overflows; y_t = o_t e^(m_t), or with the normaliser n_t (the same
/// recurrence on v = 1) y_t = o_t / max(|n_t . q_t|, e^(-m_t)). Four steps advance together: each row of the state is
/// read and written once per four steps while the four steps' values and sums stay in registers.
/// q, k: [batch, time, heads, key]; v, y: [batch, time, heads, value]; decay: [batch, time, heads, 1 or key], the factors
/// e^l without an input gate and the log-decays l with one, or null (l = 0); gate: [batch, time, heads], the log input
/// gates g, or null. All contiguous, except that q, k and v may be read where they lie (<see cref="Rows"/>): slices of wider
/// rows, and heads sharing one slice. Parallel over batch rows and heads.
/// </summary>
internal static unsafe class GatedLinearAttentionLoop
{
    internal const int Steps = 4;

    /// <summary>Sizes; the decay's width is 0 without a decay, 1 per head, key per key channel.</summary>
    public readonly record struct Shape(int Batch, int Time, int Heads, int Key, int Value, int DecayWidth);

    /// <summary>
    /// Where an input's rows lie: head h's row of step t in batch row b starts Stride (b Time + t) + Offsets[h] elements
    /// from the input's first, its entries one apart. Packed ([batch, time, heads, width]): Stride = heads width,
    /// Offsets[h] = h width; a slice of wider rows has their stride, and heads that share a slice share its offset.
    /// </summary>
    public sealed record Rows(long Stride, int[] Offsets)
    {
        public static Rows Packed(int heads, int width) => new((long)heads * width, [.. Enumerable.Range(0, heads).Select(h => h * width)]);
    }

    /// <summary>Where the rows of q, k and v lie.</summary>
    public sealed record Layout(Rows Query, Rows Key, Rows Value)
    {
        /// <summary>Elements between consecutive steps' rows of q, k and v.</summary>
        public (long Query, long Key, long Value) Strides => (Query.Stride, Key.Stride, Value.Stride);

        public static Layout Packed(Shape shape) =>
            new(Rows.Packed(shape.Heads, shape.Key), Rows.Packed(shape.Heads, shape.Key), Rows.Packed(shape.Heads, shape.Value));
    }

    /// <summary>The loop; normalised, <paramref name="earlier"/> (laid out as y, or null) receives each step's output over the
    /// earlier steps alone, a_t S_(t-1)^T q_t in the loop's frame, which the reverse pass reads.</summary>
    public static void Run<T>(T* q, T* k, T* v, T* decay, T* gate, bool normalised, T* y, Shape shape, T* earlier = null, Layout? layout = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var rows = layout ?? Layout.Packed(shape);
        HeadPairs.Run(shape.Batch, shape.Heads, (long)shape.Time * shape.Key * shape.Value,
            (b, h) => RunHead(q + rows.Query.Offsets[h], k + rows.Key.Offsets[h], v + rows.Value.Offsets[h],
                rows.Strides, decay, gate, normalised, y, earlier, shape, b, h));
    }

    /// <summary>One (batch row, head) pair; q, k and v point at the head's first entries, a step <paramref name="strides"/> apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunHead<T>(T* q, T* k, T* v, (long Query, long Key, long Value) strides, T* decay, T* gate, bool normalised, T* y,
        T* earlier, Shape shape, int b, int h)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int dk = shape.Key, dv = shape.Value, width = shape.DecayWidth;
        var (memory, normaliser) = (new T[dk * dv], new T[dk]);
        // per step of a block: the factors a_t[j], the keys scaled by e^(g_t - m_t), and the shift m_t; a step past the end
        // reads a = 1, k = 0, q = v = 0 and writes into a sink, leaving the state as it is
        var (factors, keys, shifts) = (new T[Steps * dk], new T[Steps * dk], new T[Steps]);
        var (blank, sink, rowsOfBlock) = (new T[Math.Max(dk, dv)], new T[dv], new T[9 * dk]);
        var shift = gate is null ? T.Zero : T.NegativeInfinity;
        var rows = stackalloc nint[3 * Steps];
        fixed (T* s = memory, n = normaliser, a = factors, scaled = keys, zero = blank, discard = sink, folded = rowsOfBlock)
            for (int start = 0; start < shape.Time; start += Steps)
            {
                for (int u = 0; u < Steps; u++)
                {
                    int t = start + u;
                    if (t >= shape.Time)
                    {
                        new Span<T>(a + u * dk, dk).Fill(T.One);
                        new Span<T>(scaled + u * dk, dk).Clear();
                        (rows[u], rows[Steps + u], rows[2 * Steps + u]) = ((nint)zero, (nint)zero, (nint)discard);
                        continue;
                    }
                    long row = ((long)b * shape.Time + t) * shape.Heads + h, step = (long)b * shape.Time + t;
                    var entry = Factors(decay is null ? null : decay + row * width, gate is null ? null : gate + row, width, dk, ref shift, a + u * dk);
                    shifts[u] = shift;
                    Scale(k + step * strides.Key, entry, scaled + u * dk, dk);
                    (rows[u], rows[Steps + u], rows[2 * Steps + u]) = ((nint)(q + step * strides.Query), (nint)(v + step * strides.Value), (nint)(y + row * dv));
                }
                // the next block's rows, fetched while this block's products run
                for (int u = 0; u < Steps && start + Steps + u < shape.Time; u++)
                {
                    long step = (long)b * shape.Time + start + Steps + u, next = step * shape.Heads + h;
                    Prefetch(q + step * strides.Query, dk); Prefetch(k + step * strides.Key, dk); Prefetch(v + step * strides.Value, dv);
                    Prefetch(y + next * dv, dv);
                }
                T** qs = (T**)rows, vs = (T**)(rows + Steps), ys = (T**)(rows + 2 * Steps);
                // normalised, each output reads the earlier steps' part a_u S_(u-1) before the step's own k (v . q), so that
                // output and normaliser share the one dot kk_u . q_u (see Normalise)
                if (width <= 1 && normalised) Advance<T, Uniform<T>, ReadBeforeWrite>(s, Uniform<T>.Of(a, dk), scaled, qs, vs, ys, dk, dv, folded);
                else if (width <= 1) Advance(s, Uniform<T>.Of(a, dk), scaled, qs, vs, ys, dk, dv, folded);
                else if (normalised) Advance<T, PerKey<T>, ReadBeforeWrite>(s, new(a, dk), scaled, qs, vs, ys, dk, dv, folded);
                else Advance(s, new PerKey<T>(a, dk), scaled, qs, vs, ys, dk, dv, folded);
                if (!normalised && gate is null) continue;
                for (int u = 0; u < Steps && start + u < shape.Time; u++)
                {
                    T* output = ys[u];
                    if (normalised)
                    {
                        if (earlier is not null) new ReadOnlySpan<T>(output, dv).CopyTo(new Span<T>(earlier + (output - y), dv));
                        var own = Dot(scaled + u * dk, qs[u], dk);
                        Accumulate(vs[u], own, output, dv);
                        var dot = Normalise(n, a + u * dk, scaled + u * dk, qs[u], own, dk);
                        Divide(output, T.Max(T.Abs(dot), T.Exp(-shifts[u])), dv);
                    }
                    else Scale(output, T.Exp(shifts[u]), output, dv);
                }
            }
    }

    /// <summary>
    /// One step's factors a_t[j] (written to <paramref name="a"/>, key entries) and e^(g_t - m_t), the scale of its entry (1
    /// without a gate), moving the shift m from m_(t-1) to m_t. <paramref name="l"/>: the step's decays (width 1 or key; the
    /// factors e^l without a gate, the log-decays l with one) or null; <paramref name="gate"/>: the step's log input gate or null.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static T Factors<T>(T* l, T* gate, int width, int keys, ref T shift, T* a) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (gate is null)
        {
            if (width <= 1) new Span<T>(a, keys).Fill(l is null ? T.One : l[0]);
            else new ReadOnlySpan<T>(l, keys).CopyTo(new Span<T>(a, keys));
            return T.One;
        }
        var largest = l is null ? T.Zero : T.NegativeInfinity;
        for (int j = 0; l is not null && j < width; j++) largest = T.Max(largest, l[j]);
        // a_t[j] = e^((l_j - max_j l_j) + (max_j l_j + m_(t-1) - m_t)): both terms are at most 0 as computed (the second is 0
        // exactly when the decays set m_t), so no rounding of a large m can push a factor above 1 or wipe the state
        var top = largest + shift;
        var next = T.Max(top, *gate);
        // m_t = -inf (nothing written yet, or every decay and the gate -inf) leaves the state 0
        var carry = T.IsNegativeInfinity(next) ? T.NegativeInfinity : top - next;
        if (width <= 1 || T.IsNegativeInfinity(largest)) new Span<T>(a, keys).Fill(T.Exp(carry));
        else for (int j = 0; j < keys; j++) a[j] = T.Exp(l[j] - largest + carry);
        shift = next;
        return T.IsNegativeInfinity(next) ? T.Zero : T.Exp(*gate - next);
    }

    /// <summary>
    /// n = a * n + k, returning q . n as (a n_(t-1)) . q + <paramref name="own"/>, the step's own part k . q
    /// (<see cref="VectorRows.Dot{T}"/> of k and q) as its output adds it (o = a S_(t-1)^T q + v (k . q)), so that
    /// o / (n . q) keeps v exactly when the step dominates however much k . q cancels: summed apart, o and n . q would
    /// each carry a rounding of |k| |q| and their quotient its ratio to |k . q|.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static T Normalise<T>(T* n, T* a, T* k, T* q, T own, int keys) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int i = 0;
        var sum = Vector<T>.Zero;
        for (; i <= keys - Vector<T>.Count; i += Vector<T>.Count)
        {
            var carried = Vector.Load(a + i) * Vector.Load(n + i);
            sum = VectorFused.MultiplyAdd(Vector.Load(q + i), carried, sum);
            Vector.Store(carried + Vector.Load(k + i), n + i);
        }
        var earlier = Vector.Sum(sum);
        for (; i < keys; i++)
        {
            var carried = a[i] * n[i];
            earlier = T.FusedMultiplyAdd(q[i], carried, earlier);
            n[i] = carried + k[i];
        }
        return earlier + own;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Divide<T>(T* y, T divisor, int width) where T : unmanaged, INumber<T>
    {
        int i = 0;
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count) Vector.Store(Vector.Load(y + i) / new Vector<T>(divisor), y + i);
        for (; i < width; i++) y[i] /= divisor;
    }


    /// <summary>
    /// Four steps on S[j, i] (key j, value i, at j width + i): S = a_u S + k_u v_u^T, y_u = S^T q_u, for u = 0..3, read after
    /// each step's write. <paramref name="scratch"/>: 9 keys entries (<see cref="Advance{T, TFactors, TRead}"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Advance<T, TFactors>(T* s, TFactors a, T* k, T** q, T** v, T** y, int keys, int width, T* scratch)
        where T : unmanaged, INumber<T> where TFactors : struct, IFactors<T>
        => Advance<T, TFactors, ReadAfterWrite>(s, a, k, q, v, y, keys, width, scratch);

    /// <summary>
    /// The four steps, reading y_u either after step u's write (S_u) or before it (a_u S_(u-1), the sum over every earlier
    /// step alone: the reverse pass's terms whose step-u parts would otherwise cancel). Read after, step by step, each row of
    /// S streaming through once while the four steps' values and sums stay in registers (three multiply-adds per entry and
    /// step). Read before, as one block: with the entrywise products of the steps' factors (each at most 1)
    /// P_u = a_0 ... a_u, R_r = a_(r+1) ... a_3 and A(r, u) = a_(r+1) ... a_u,
    ///   S_4 = P_3 S_0 + sum_r R_r k_r v_r^T,   y_u = (P_u S_0)^T q_u + sum_(r &lt; u) A(r, u) (q_u . k_r) v_r,
    /// one pass over S spends nine multiply-adds on each entry for the four steps, and the pairs within the block are six
    /// dots of q and k and as many sums of rows of v. Factors by row fold into q and k (scaled into
    /// <paramref name="scratch"/>, 9 keys entries), factors by column into v and y. A NaN or infinity reaches what it
    /// reaches step by step: every path from an entry to an output is a product of the same terms. (Read after, in the
    /// forward loop, the block changed the time by -2 to +3%, and a gradient that is a difference of terms of the rest's size, GLA's queries'
    /// at input scale 1e4, lost 6x more digits through its outputs.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Advance<T, TFactors, TRead>(T* s, TFactors a, T* k, T** q, T** v, T** y, int keys, int width, T* scratch)
        where T : unmanaged, INumber<T> where TFactors : struct, IFactors<T> where TRead : struct, IReadOrder
    {
        int i = 0;
        if (default(TRead).BeforeWrite)
        {
            var rows = Fold(a, k, q, keys, scratch);
            if (WideLanes<T>.Faster) i = BlockColumns<T, Vector512<T>, WideLanes<T>, TFactors>(s, a, rows, v, y, keys, width, i);
            i = BlockColumns<T, Vector<T>, NativeLanes<T>, TFactors>(s, a, rows, v, y, keys, width, i);
            for (; i < width; i++) BlockColumn(s, a, rows, v, y, keys, width, i);
            Within(a, k, q, v, y, keys, width);
            return;
        }
        if (WideLanes<T>.Faster) i = StepColumns<T, Vector512<T>, WideLanes<T>, TFactors>(s, a, k, q, v, y, keys, width, i);
        i = StepColumns<T, Vector<T>, NativeLanes<T>, TFactors>(s, a, k, q, v, y, keys, width, i);
        for (; i < width; i++) StepColumn(s, a, k, q, v, y, keys, width, i);
    }

    /// <summary>The rows one pass reads: q'_u, k'_r (factors by row folded in, or q and k as given) and P_3 by row.</summary>
    private readonly struct FoldedRows<T>(T* q0, T* q1, T* q2, T* q3, T* k, T* decays, T decay) where T : unmanaged
    {
        public readonly T* Q0 = q0, Q1 = q1, Q2 = q2, Q3 = q3, K = k, Decays = decays;

        /// <summary>P_3 for every entry alike (factors per step).</summary>
        public readonly T Decay = decay;
    }

    /// <summary>q'_u = P_u q_u, k'_r = R_r k_r into scratch, and P_3 by row there too for factors by row (a factor per step
    /// keeps it as one number); q and k as given for factors by column.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static FoldedRows<T> Fold<T, TFactors>(TFactors a, T* k, T** q, int keys, T* scratch)
        where T : unmanaged, INumber<T> where TFactors : struct, IFactors<T>
    {
        if (a.ByColumn) return new(q[0], q[1], q[2], q[3], k, null, T.One);
        T* qs = scratch, ks = scratch + 4 * keys, decays = scratch + 8 * keys;
        T* q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
        int n = Vector<T>.Count, j = 0;
        for (; j <= keys - n; j += n)
        {
            Vector<T> f0 = a.Rows<Vector<T>, NativeLanes<T>>(0, j), f1 = a.Rows<Vector<T>, NativeLanes<T>>(1, j);
            Vector<T> f2 = a.Rows<Vector<T>, NativeLanes<T>>(2, j), f3 = a.Rows<Vector<T>, NativeLanes<T>>(3, j);
            Vector<T> p1 = f0 * f1, p2 = p1 * f2, r1 = f2 * f3;
            Vector.Store(f0 * Vector.Load(q0 + j), qs + j);
            Vector.Store(p1 * Vector.Load(q1 + j), qs + keys + j);
            Vector.Store(p2 * Vector.Load(q2 + j), qs + 2 * keys + j);
            Vector.Store(p2 * f3 * Vector.Load(q3 + j), qs + 3 * keys + j);
            Vector.Store(f1 * r1 * Vector.Load(k + j), ks + j);
            Vector.Store(r1 * Vector.Load(k + keys + j), ks + keys + j);
            Vector.Store(f3 * Vector.Load(k + 2 * keys + j), ks + 2 * keys + j);
            Vector.Store(Vector.Load(k + 3 * keys + j), ks + 3 * keys + j);
            if (a.ByRow) Vector.Store(p2 * f3, decays + j);
        }
        for (; j < keys; j++)
        {
            T f0 = a.At(0, j, 0), f1 = a.At(1, j, 0), f2 = a.At(2, j, 0), f3 = a.At(3, j, 0);
            T p1 = f0 * f1, p2 = p1 * f2, r1 = f2 * f3;
            (qs[j], qs[keys + j], qs[2 * keys + j], qs[3 * keys + j]) = (f0 * q0[j], p1 * q1[j], p2 * q2[j], p2 * f3 * q3[j]);
            (ks[j], ks[keys + j], ks[2 * keys + j], ks[3 * keys + j]) = (f1 * r1 * k[j], r1 * k[keys + j], f3 * k[2 * keys + j], k[3 * keys + j]);
            if (a.ByRow) decays[j] = p2 * f3;
        }
        var decay = a.ByRow ? T.One : a.At(0, 0, 0) * a.At(1, 0, 0) * a.At(2, 0, 0) * a.At(3, 0, 0);
        return new(qs, qs + keys, qs + 2 * keys, qs + 3 * keys, ks, decays, decay);
    }

    /// <summary>
    /// The block's pass on the columns from <paramref name="i"/>, two vectors of <typeparamref name="TLanes"/> at a time
    /// while two fit: y_u = (P_u S_0)^T q_u and S_4 = P_3 S_0 + sum_r R_r k_r v_r^T; returns the first column left. Compiled
    /// optimised from its first call, like its caller.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int BlockColumns<T, TV, TLanes, TFactors>(T* s, TFactors a, FoldedRows<T> rows, T** v, T** y, int keys, int width, int i)
        where T : unmanaged, INumber<T> where TV : struct where TLanes : ILanes<TV, T> where TFactors : struct, IFactors<T>
    {
        int n = TLanes.Count;
        T* q0 = rows.Q0, q1 = rows.Q1, q2 = rows.Q2, q3 = rows.Q3, decays = rows.Decays;
        T* k0 = rows.K, k1 = rows.K + keys, k2 = rows.K + 2 * keys, k3 = rows.K + 3 * keys;
        T* v0 = v[0], v1 = v[1], v2 = v[2], v3 = v[3];
        T* o0 = y[0], o1 = y[1], o2 = y[2], o3 = y[3];
        for (; i <= width - 2 * n; i += 2 * n)
        {
            TV x0 = TLanes.Load(v0 + i), x1 = TLanes.Load(v0 + i + n), w0 = TLanes.Load(v1 + i), w1 = TLanes.Load(v1 + i + n);
            TV z0 = TLanes.Load(v2 + i), z1 = TLanes.Load(v2 + i + n), r0 = TLanes.Load(v3 + i), r1 = TLanes.Load(v3 + i + n);
            TV d0 = TLanes.Broadcast(rows.Decay), d1 = d0;
            if (a.ByColumn)
            {
                // v_r R_r by column, and P_3
                TV f10 = a.Across<TV, TLanes>(1, 0, i), f11 = a.Across<TV, TLanes>(1, 0, i + n);
                TV f20 = a.Across<TV, TLanes>(2, 0, i), f21 = a.Across<TV, TLanes>(2, 0, i + n);
                TV f30 = a.Across<TV, TLanes>(3, 0, i), f31 = a.Across<TV, TLanes>(3, 0, i + n);
                TV e0 = TLanes.Multiply(f20, f30), e1 = TLanes.Multiply(f21, f31);
                z0 = TLanes.Multiply(z0, f30); z1 = TLanes.Multiply(z1, f31);
                w0 = TLanes.Multiply(w0, e0); w1 = TLanes.Multiply(w1, e1);
                e0 = TLanes.Multiply(f10, e0); e1 = TLanes.Multiply(f11, e1);
                x0 = TLanes.Multiply(x0, e0); x1 = TLanes.Multiply(x1, e1);
                d0 = TLanes.Multiply(a.Across<TV, TLanes>(0, 0, i), e0); d1 = TLanes.Multiply(a.Across<TV, TLanes>(0, 0, i + n), e1);
            }
            TV y00 = default, y01 = default, y10 = default, y11 = default, y20 = default, y21 = default, y30 = default, y31 = default;
            for (int j = 0; j < keys; j++)
            {
                T* cell = s + j * width + i;
                TV c0 = TLanes.Load(cell), c1 = TLanes.Load(cell + n);
                var b = TLanes.Broadcast(q0[j]);
                y00 = TLanes.MultiplyAdd(b, c0, y00); y01 = TLanes.MultiplyAdd(b, c1, y01);
                b = TLanes.Broadcast(q1[j]);
                y10 = TLanes.MultiplyAdd(b, c0, y10); y11 = TLanes.MultiplyAdd(b, c1, y11);
                b = TLanes.Broadcast(q2[j]);
                y20 = TLanes.MultiplyAdd(b, c0, y20); y21 = TLanes.MultiplyAdd(b, c1, y21);
                b = TLanes.Broadcast(q3[j]);
                y30 = TLanes.MultiplyAdd(b, c0, y30); y31 = TLanes.MultiplyAdd(b, c1, y31);
                TV g0 = d0, g1 = d1;
                if (a.ByRow) g0 = g1 = TLanes.Broadcast(decays[j]);
                b = TLanes.Broadcast(k0[j]);
                c0 = TLanes.MultiplyAdd(c0, g0, TLanes.Multiply(b, x0)); c1 = TLanes.MultiplyAdd(c1, g1, TLanes.Multiply(b, x1));
                b = TLanes.Broadcast(k1[j]);
                c0 = TLanes.MultiplyAdd(b, w0, c0); c1 = TLanes.MultiplyAdd(b, w1, c1);
                b = TLanes.Broadcast(k2[j]);
                c0 = TLanes.MultiplyAdd(b, z0, c0); c1 = TLanes.MultiplyAdd(b, z1, c1);
                b = TLanes.Broadcast(k3[j]);
                c0 = TLanes.MultiplyAdd(b, r0, c0); c1 = TLanes.MultiplyAdd(b, r1, c1);
                TLanes.Store(c0, cell);
                TLanes.Store(c1, cell + n);
            }
            if (a.ByColumn)
            {
                // P_u by column on each output
                TV p0 = a.Across<TV, TLanes>(0, 0, i), p1 = a.Across<TV, TLanes>(0, 0, i + n);
                y00 = TLanes.Multiply(y00, p0); y01 = TLanes.Multiply(y01, p1);
                p0 = TLanes.Multiply(p0, a.Across<TV, TLanes>(1, 0, i)); p1 = TLanes.Multiply(p1, a.Across<TV, TLanes>(1, 0, i + n));
                y10 = TLanes.Multiply(y10, p0); y11 = TLanes.Multiply(y11, p1);
                p0 = TLanes.Multiply(p0, a.Across<TV, TLanes>(2, 0, i)); p1 = TLanes.Multiply(p1, a.Across<TV, TLanes>(2, 0, i + n));
                y20 = TLanes.Multiply(y20, p0); y21 = TLanes.Multiply(y21, p1);
                y30 = TLanes.Multiply(y30, d0); y31 = TLanes.Multiply(y31, d1);
            }
            TLanes.Store(y00, o0 + i); TLanes.Store(y01, o0 + i + n);
            TLanes.Store(y10, o1 + i); TLanes.Store(y11, o1 + i + n);
            TLanes.Store(y20, o2 + i); TLanes.Store(y21, o2 + i + n);
            TLanes.Store(y30, o3 + i); TLanes.Store(y31, o3 + i + n);
        }
        return i;
    }

    /// <summary>The block's pass on column i alone.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BlockColumn<T, TFactors>(T* s, TFactors a, FoldedRows<T> rows, T** v, T** y, int keys, int width, int i)
        where T : unmanaged, INumber<T> where TFactors : struct, IFactors<T>
    {
        T x0 = v[0][i], x1 = v[1][i], x2 = v[2][i], x3 = v[3][i], decay = rows.Decay;
        T p0 = T.One, p1 = T.One, p2 = T.One;
        if (a.ByColumn)
        {
            T f0 = a.At(0, 0, i), f1 = a.At(1, 0, i), f2 = a.At(2, 0, i), f3 = a.At(3, 0, i), e = f2 * f3;
            (x2, x1, x0) = (x2 * f3, x1 * e, x0 * (f1 * e));
            (p0, p1, p2, decay) = (f0, f0 * f1, f0 * f1 * f2, f0 * (f1 * e));
        }
        T* k = rows.K;
        T y0 = T.Zero, y1 = T.Zero, y2 = T.Zero, y3 = T.Zero;
        for (int j = 0; j < keys; j++)
        {
            T* cell = s + j * width + i;
            var c = *cell;
            y0 += rows.Q0[j] * c; y1 += rows.Q1[j] * c; y2 += rows.Q2[j] * c; y3 += rows.Q3[j] * c;
            *cell = c * (a.ByRow ? rows.Decays[j] : decay) + k[j] * x0 + k[keys + j] * x1 + k[2 * keys + j] * x2 + k[3 * keys + j] * x3;
        }
        if (a.ByColumn) (y0, y1, y2, y3) = (y0 * p0, y1 * p1, y2 * p2, y3 * decay);
        (y[0][i], y[1][i], y[2][i], y[3][i]) = (y0, y1, y2, y3);
    }

    /// <summary>
    /// The pairs within the block: y_u += sum_(r &lt; u) A(r, u) (q_u . k_r) v_r, the dots in one pass over the keys (weighted
    /// by A(r, u) there for factors by row), then the rows of v in one pass over the columns (weighted there by column).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Within<T, TFactors>(TFactors a, T* k, T** q, T** v, T** y, int keys, int width)
        where T : unmanaged, INumber<T> where TFactors : struct, IFactors<T>
    {
        T* q1 = q[1], q2 = q[2], q3 = q[3];
        T* k0 = k, k1 = k + keys, k2 = k + 2 * keys;
        int n = Vector<T>.Count, j = 0;
        Vector<T> g10 = default, g20 = default, g21 = default, g30 = default, g31 = default, g32 = default;
        for (; j <= keys - n; j += n)
        {
            Vector<T> qb = Vector.Load(q1 + j), qc = Vector.Load(q2 + j), qd = Vector.Load(q3 + j);
            Vector<T> ka = Vector.Load(k0 + j), kb = Vector.Load(k1 + j), kc = Vector.Load(k2 + j);
            // k_r A(r, u) by row
            Vector<T> k01 = ka, k02 = ka, k03 = ka, k12 = kb, k13 = kb, k23 = kc;
            if (a.ByRow)
            {
                Vector<T> f1 = a.Rows<Vector<T>, NativeLanes<T>>(1, j), f2 = a.Rows<Vector<T>, NativeLanes<T>>(2, j), f3 = a.Rows<Vector<T>, NativeLanes<T>>(3, j);
                (k01, k12, k23) = (ka * f1, kb * f2, kc * f3);
                (k02, k13) = (k01 * f2, k12 * f3);
                k03 = k02 * f3;
            }
            g10 = VectorFused.MultiplyAdd(qb, k01, g10);
            g20 = VectorFused.MultiplyAdd(qc, k02, g20); g21 = VectorFused.MultiplyAdd(qc, k12, g21);
            g30 = VectorFused.MultiplyAdd(qd, k03, g30); g31 = VectorFused.MultiplyAdd(qd, k13, g31); g32 = VectorFused.MultiplyAdd(qd, k23, g32);
        }
        T w10 = Vector.Sum(g10), w20 = Vector.Sum(g20), w21 = Vector.Sum(g21), w30 = Vector.Sum(g30), w31 = Vector.Sum(g31), w32 = Vector.Sum(g32);
        for (; j < keys; j++)
        {
            T f1 = a.ByRow ? a.At(1, j, 0) : T.One, f2 = a.ByRow ? a.At(2, j, 0) : T.One, f3 = a.ByRow ? a.At(3, j, 0) : T.One;
            T k01 = k0[j] * f1, k12 = k1[j] * f2, k23 = k2[j] * f3, k02 = k01 * f2, k13 = k12 * f3, k03 = k02 * f3;
            (w10, w20, w21) = (w10 + q1[j] * k01, w20 + q2[j] * k02, w21 + q2[j] * k12);
            (w30, w31, w32) = (w30 + q3[j] * k03, w31 + q3[j] * k13, w32 + q3[j] * k23);
        }
        if (!a.ByRow && !a.ByColumn)
        {
            // factors per step: A(r, u) on the dots
            T f1 = a.At(1, 0, 0), f2 = a.At(2, 0, 0), f3 = a.At(3, 0, 0);
            (w10, w21, w32) = (w10 * f1, w21 * f2, w32 * f3);
            (w20, w31) = (w20 * (f1 * f2), w31 * (f2 * f3));
            w30 *= f1 * f2 * f3;
        }
        T* v0 = v[0], v1 = v[1], v2 = v[2];
        T* o1 = y[1], o2 = y[2], o3 = y[3];
        int i = 0;
        for (; i <= width - n; i += n)
        {
            Vector<T> va = Vector.Load(v0 + i), vb = Vector.Load(v1 + i), vc = Vector.Load(v2 + i);
            // v_r A(r, u) by column
            Vector<T> v01 = va, v02 = va, v03 = va, v12 = vb, v13 = vb, v23 = vc;
            if (a.ByColumn)
            {
                Vector<T> f1 = a.Across<Vector<T>, NativeLanes<T>>(1, 0, i), f2 = a.Across<Vector<T>, NativeLanes<T>>(2, 0, i);
                Vector<T> f3 = a.Across<Vector<T>, NativeLanes<T>>(3, 0, i);
                (v01, v12, v23) = (va * f1, vb * f2, vc * f3);
                (v02, v13) = (v01 * f2, v12 * f3);
                v03 = v02 * f3;
            }
            Vector.Store(VectorFused.MultiplyAdd(new Vector<T>(w10), v01, Vector.Load(o1 + i)), o1 + i);
            Vector.Store(VectorFused.MultiplyAdd(new Vector<T>(w21), v12, VectorFused.MultiplyAdd(new Vector<T>(w20), v02, Vector.Load(o2 + i))), o2 + i);
            Vector.Store(VectorFused.MultiplyAdd(new Vector<T>(w32), v23,
                VectorFused.MultiplyAdd(new Vector<T>(w31), v13, VectorFused.MultiplyAdd(new Vector<T>(w30), v03, Vector.Load(o3 + i)))), o3 + i);
        }
        for (; i < width; i++)
        {
            T f1 = a.ByColumn ? a.At(1, 0, i) : T.One, f2 = a.ByColumn ? a.At(2, 0, i) : T.One, f3 = a.ByColumn ? a.At(3, 0, i) : T.One;
            T v01 = v0[i] * f1, v12 = v1[i] * f2, v23 = v2[i] * f3, v02 = v01 * f2, v13 = v12 * f3, v03 = v02 * f3;
            o1[i] += w10 * v01;
            o2[i] += w20 * v02 + w21 * v12;
            o3[i] += w30 * v03 + w31 * v13 + w32 * v23;
        }
    }

    /// <summary>
    /// The four steps read after each write on the columns from <paramref name="i"/>, two vectors of
    /// <typeparamref name="TLanes"/> at a time while two fit; returns the first column left. Compiled optimised from its first
    /// call, like its caller (a quick-compiled copy would call its steps' writes instead of inlining them).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int StepColumns<T, TV, TLanes, TFactors>(T* s, TFactors a, T* k, T** q, T** v, T** y, int keys, int width, int i)
        where T : unmanaged, INumber<T> where TV : struct where TLanes : ILanes<TV, T> where TFactors : struct, IFactors<T>
    {
        int n = TLanes.Count;
        T* k0 = k, k1 = k + keys, k2 = k + 2 * keys, k3 = k + 3 * keys;
        T* q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
        T* v0 = v[0], v1 = v[1], v2 = v[2], v3 = v[3];
        T* o0 = y[0], o1 = y[1], o2 = y[2], o3 = y[3];
        for (; i <= width - 2 * n; i += 2 * n)
        {
            TV x0 = TLanes.Load(v0 + i), x1 = TLanes.Load(v0 + i + n), w0 = TLanes.Load(v1 + i), w1 = TLanes.Load(v1 + i + n);
            TV z0 = TLanes.Load(v2 + i), z1 = TLanes.Load(v2 + i + n), r0 = TLanes.Load(v3 + i), r1 = TLanes.Load(v3 + i + n);
            TV y00 = default, y01 = default, y10 = default, y11 = default, y20 = default, y21 = default, y30 = default, y31 = default;
            for (int j = 0; j < keys; j++)
            {
                T* cell = s + j * width + i;
                TV c0 = TLanes.Load(cell), c1 = TLanes.Load(cell + n);
                Write<T, TV, TLanes, TFactors>(ref c0, ref c1, a, 0, j, i, TLanes.Broadcast(k0[j]), TLanes.Broadcast(q0[j]), x0, x1, ref y00, ref y01);
                Write<T, TV, TLanes, TFactors>(ref c0, ref c1, a, 1, j, i, TLanes.Broadcast(k1[j]), TLanes.Broadcast(q1[j]), w0, w1, ref y10, ref y11);
                Write<T, TV, TLanes, TFactors>(ref c0, ref c1, a, 2, j, i, TLanes.Broadcast(k2[j]), TLanes.Broadcast(q2[j]), z0, z1, ref y20, ref y21);
                Write<T, TV, TLanes, TFactors>(ref c0, ref c1, a, 3, j, i, TLanes.Broadcast(k3[j]), TLanes.Broadcast(q3[j]), r0, r1, ref y30, ref y31);
                TLanes.Store(c0, cell);
                TLanes.Store(c1, cell + n);
            }
            TLanes.Store(y00, o0 + i); TLanes.Store(y01, o0 + i + n);
            TLanes.Store(y10, o1 + i); TLanes.Store(y11, o1 + i + n);
            TLanes.Store(y20, o2 + i); TLanes.Store(y21, o2 + i + n);
            TLanes.Store(y30, o3 + i); TLanes.Store(y31, o3 + i + n);
        }
        return i;
    }

    /// <summary>Step u on two vectors of row j of S from column i: c = f c + k x, y += q c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Write<T, TV, TLanes, TFactors>(ref TV c0, ref TV c1, TFactors a, int u, int j, int i, TV k, TV q,
        TV x0, TV x1, ref TV y0, ref TV y1)
        where T : unmanaged, INumber<T> where TV : struct where TLanes : ILanes<TV, T> where TFactors : struct, IFactors<T>
    {
        var f0 = a.Across<TV, TLanes>(u, j, i);
        var f1 = a.ByColumn ? a.Across<TV, TLanes>(u, j, i + TLanes.Count) : f0;
        c0 = TLanes.MultiplyAdd(f0, c0, TLanes.Multiply(k, x0)); c1 = TLanes.MultiplyAdd(f1, c1, TLanes.Multiply(k, x1));
        y0 = TLanes.MultiplyAdd(q, c0, y0); y1 = TLanes.MultiplyAdd(q, c1, y1);
    }

    /// <summary>The four steps read after each write on column i alone.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void StepColumn<T, TFactors>(T* s, TFactors a, T* k, T** q, T** v, T** y, int keys, int width, int i)
        where T : unmanaged, INumber<T> where TFactors : struct, IFactors<T>
    {
        T y0 = T.Zero, y1 = T.Zero, y2 = T.Zero, y3 = T.Zero;
        for (int j = 0; j < keys; j++)
        {
            T* cell = s + j * width + i;
            var c = a.At(0, j, i) * *cell + k[j] * v[0][i];
            y0 += q[0][j] * c;
            c = a.At(1, j, i) * c + k[keys + j] * v[1][i];
            y1 += q[1][j] * c;
            c = a.At(2, j, i) * c + k[2 * keys + j] * v[2][i];
            y2 += q[2][j] * c;
            c = a.At(3, j, i) * c + k[3 * keys + j] * v[3][i];
            y3 += q[3][j] * c;
            *cell = c;
        }
        (y[0][i], y[1][i], y[2][i], y[3][i]) = (y0, y1, y2, y3);
    }

    /// <summary>Whether <see cref="Advance{T, TFactors, TRead}"/> reads each step's output before its write or after it.</summary>
    internal interface IReadOrder
    {
        bool BeforeWrite { get; }
    }

    internal readonly struct ReadAfterWrite : IReadOrder
    {
        public bool BeforeWrite => false;
    }

    internal readonly struct ReadBeforeWrite : IReadOrder
    {
        public bool BeforeWrite => true;
    }

    /// <summary>
    /// The factors of a block's four steps on the state's entries: one per step (a decay per head), one per row (per key
    /// channel on S, key rows), or one per column (per key channel on S^T, key columns).
    /// </summary>
    internal interface IFactors<T> where T : unmanaged, INumber<T>
    {
        /// <summary>Step u's factor on row j, column i.</summary>
        T At(int u, int j, int i);

        /// <summary>Step u's factors on row j, the columns of one vector from i.</summary>
        TV Across<TV, TLanes>(int u, int j, int i) where TV : struct where TLanes : ILanes<TV, T>;

        /// <summary>Step u's factors on the rows of one vector from j (column 0).</summary>
        TV Rows<TV, TLanes>(int u, int j) where TV : struct where TLanes : ILanes<TV, T>;

        /// <summary>Whether the factors change along a row.</summary>
        bool ByColumn { get; }

        /// <summary>Whether the factors change from row to row.</summary>
        bool ByRow { get; }
    }

    internal readonly struct Uniform<T>(T a0, T a1, T a2, T a3) : IFactors<T> where T : unmanaged, INumber<T>
    {
        /// <summary>The four steps' factors from the first entry of each of their rows, <paramref name="stride"/> apart.</summary>
        public static Uniform<T> Of(T* a, int stride) => new(a[0], a[stride], a[2 * stride], a[3 * stride]);

        public T At(int u, int j, int i) => u switch { 0 => a0, 1 => a1, 2 => a2, _ => a3 };
        public TV Across<TV, TLanes>(int u, int j, int i) where TV : struct where TLanes : ILanes<TV, T> => TLanes.Broadcast(At(u, j, i));
        public TV Rows<TV, TLanes>(int u, int j) where TV : struct where TLanes : ILanes<TV, T> => TLanes.Broadcast(At(u, j, 0));
        public bool ByColumn => false;
        public bool ByRow => false;
    }

    /// <summary>Step u's factors at a + u stride, one per row.</summary>
    internal readonly struct PerKey<T>(T* a, int stride) : IFactors<T> where T : unmanaged, INumber<T>
    {
        public T At(int u, int j, int i) => a[u * stride + j];
        public TV Across<TV, TLanes>(int u, int j, int i) where TV : struct where TLanes : ILanes<TV, T> => TLanes.Broadcast(a[u * stride + j]);
        public TV Rows<TV, TLanes>(int u, int j) where TV : struct where TLanes : ILanes<TV, T> => TLanes.Load(a + u * stride + j);
        public bool ByColumn => false;
        public bool ByRow => true;
    }

    /// <summary>Step u's factors at a + u stride, one per column.</summary>
    internal readonly struct PerColumn<T>(T* a, int stride) : IFactors<T> where T : unmanaged, INumber<T>
    {
        public T At(int u, int j, int i) => a[u * stride + i];
        public TV Across<TV, TLanes>(int u, int j, int i) where TV : struct where TLanes : ILanes<TV, T> => TLanes.Load(a + u * stride + i);
        public TV Rows<TV, TLanes>(int u, int j) where TV : struct where TLanes : ILanes<TV, T> => TLanes.Broadcast(T.One);
        public bool ByColumn => true;
        public bool ByRow => false;
    }
}
