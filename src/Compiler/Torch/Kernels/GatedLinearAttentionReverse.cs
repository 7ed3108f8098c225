using System.Numerics;
using System.Runtime.CompilerServices;
using static Duality.Kernels.GatedLinearAttentionLoop;
using static Duality.Kernels.VectorRows;

namespace Duality.Kernels;

/// <summary>
/// The reverse pass of <see cref="GatedLinearAttentionLoop"/>: the gradients of q, k and v from the output's gradient dy,
/// per batch row and head, in O(T (key + value)) memory besides the inputs (and for the log-decays a state every 32
/// steps). In the loop's frame (S~ = S e^(-m), the factors a~_t = a_t e^(m_(t-1) - m_t), the scaled keys
/// kk_t = e^(g_t - m_t) k_t), with D_t = dS_t e^(m_t) the state's gradient and v with a column of ones when normalised:
///   delta_t = dy_t e^(m_t), or normalised dy_t / max(|nu_t|, e^(-m_t)) and on the ones' column
///             -sign(nu_t) (dy_t . y_t) / |nu_t| where |nu_t| > e^(-m_t) (0 elsewhere), nu_t = n~_t . q_t;
///   dq_t = S~_t delta_t = a~_t S~_(t-1) delta_t + kk_t (v_t . delta_t)                  (a sweep forward in time),
///   D_t = a~_(t+1) D_(t+1) + q_t delta_t^T,  dv_t = D_t^T kk_t,
///   dk_t = e^(g_t - m_t) D_t v_t = e^(g_t - m_t) (a~_(t+1) D_(t+1) v_t + q_t (v_t . delta_t))   (a sweep back).
/// The log-decays' gradient is formed directly, as the decayed state entering each step against the state's gradient
/// after it, never as a sum of q dq - k dk over later steps, whose terms cancel to the rounding of their size when the
/// decays are strong: segment by segment from the states the sweeps hold where each begins and ends, per head
/// (<see cref="GatedLinearAttentionDecayGradient{T}"/>, into <c>headTerms</c>, [batch, time, heads]) or per key channel
/// (<see cref="GatedLinearAttentionKeyDecayGradient{T}"/>, into <c>terms</c>, [batch, time, heads, key]), when given. Every factor is at most 1 and every
/// exponent at most 0 whatever the gates' scale, as in the forward loop. Layouts as in the loop; dq, dk: [batch, time, heads, key]; dv: [batch, time, heads, value];
/// earlier (normalised): each step's output over the earlier steps alone, as the loop kept it, laid out as y; dGate
/// (with an input gate, when given): dg_t = k_t . dk_t, [batch, time, heads]. Parallel over batch rows and heads.
/// </summary>
internal static unsafe class GatedLinearAttentionReverse
{
    public static void Run<T>(T* q, T* k, T* v, T* decay, T* gate, bool normalised, T* y, T* earlier, T* dy, T* dq, T* dk, T* dv, T* terms,
        T* headTerms, Shape shape, Layout? layout = null, T* dGate = null) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var rows = layout ?? Layout.Packed(shape);
        HeadPairs.Run(shape.Batch, shape.Heads, (long)shape.Time * shape.Key * shape.Value,
            (b, h) => RunHead(new Head<T>(q + rows.Query.Offsets[h], k + rows.Key.Offsets[h], v + rows.Value.Offsets[h],
                rows.Strides, decay, gate, normalised, y, earlier, dy, dq, dk, dv, terms, headTerms, dGate, shape, b, h)));
    }

    /// <summary>One (batch row, head) pair's pointers and sizes; q, k and v point at the head's first entries, a step
    /// <paramref name="strides"/> apart (the gradients and the rest are packed).</summary>
    private readonly struct Head<T>(T* q, T* k, T* v, (long Query, long Key, long Value) strides, T* decay, T* gate, bool normalised, T* y,
        T* earlier, T* dy, T* dq, T* dk, T* dv, T* terms, T* headTerms, T* dGate, Shape shape, int b, int h) where T : unmanaged, IFloatingPointIeee754<T>
    {
        public readonly T* Gate = gate, Y = y, Earlier = earlier, Dy = dy, Dq = dq, Dk = dk, Dv = dv, Terms = terms, HeadTerms = headTerms,
            DGate = dGate;
        public readonly bool Normalised = normalised;
        public readonly Shape Shape = shape;
        private readonly T* decay = decay, q = q, k = k, v = v;
        private readonly (long Query, long Key, long Value) strides = strides;
        private readonly int b = b, h = h;

        public long Row(int t) => ((long)b * Shape.Time + t) * Shape.Heads + h;

        /// <summary>Step t's query, key and value rows.</summary>
        public T* Q(int t) => q + ((long)b * Shape.Time + t) * strides.Query;

        public T* K(int t) => k + ((long)b * Shape.Time + t) * strides.Key;

        public T* V(int t) => v + ((long)b * Shape.Time + t) * strides.Value;

        /// <summary>Elements between consecutive steps' rows of q, k and v, and of the log-decays' gradient (per key channel or per head).</summary>
        public SegmentedDecayGradient<T>.Strides StepStrides(bool perKey) =>
            new(strides.Query, strides.Key, strides.Value, perKey ? (long)Shape.Heads * Shape.Key : Shape.Heads);

        public T* DecayAt(long row) => decay is null ? null : decay + row * Shape.DecayWidth;

        public T* GateAt(long row) => Gate is null ? null : Gate + row;

        /// <summary>a~_t into a and e^(g_t - m_t), moving the shift from m_(t-1) to m_t.</summary>
        public T Step(int t, ref T shift, T* a) => Factors(DecayAt(Row(t)), GateAt(Row(t)), Shape.DecayWidth, Shape.Key, ref shift, a);

        /// <summary>Asks for step t's rows ahead of their use: those the sweep forward reads and writes, or the sweep back's.
        /// Compiled optimised from its first call (a quick-compiled copy would not inline its prefetches).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void PrefetchRows(int t, bool forward)
        {
            long row = Row(t);
            int keys = Shape.Key, width = Shape.Value;
            Prefetch(Q(t), keys); Prefetch(K(t), keys); Prefetch(V(t), width);
            if (forward)
            {
                Prefetch(Y + row * width, width); Prefetch(Dy + row * width, width); Prefetch(Dq + row * keys, keys);
            }
            else
            {
                Prefetch(Dk + row * keys, keys); Prefetch(Dv + row * width, width);
            }
        }

        /// <summary>e^(g_t - m_t) for the shift m_t.</summary>
        public T Entry(int t, T shift) => Gate is null ? T.One : T.IsNegativeInfinity(shift) ? T.Zero : T.Exp(Gate[Row(t)] - shift);

        /// <summary>a~_(t+1), which carries D_(t+1) back to step t (0 past the last step).</summary>
        public void Carry(int t, T[] shifts, T* a)
        {
            if (t == Shape.Time - 1) new Span<T>(a, Shape.Key).Clear();
            else
            {
                var before = shifts[t];
                Step(t + 1, ref before, a);
            }
        }
    }

    /// <summary>
    /// Each product is the forward loop's <see cref="Advance{T, TFactors, TRead}"/> on a state of its own, four steps per
    /// pass over it. dq_t - kk_t (v_t . delta_t) = (a~_t P_(t-1))^T delta_t with P = S~^T (P = a P + v kk^T, the factors
    /// per key column), forward in time; back in time dv_t = D_t^T kk_t with D = a D + q delta^T (per key row), and
    /// a~_(t+1) D_(t+1) v_t = (a~_(t+1) Q_(t+1))^T v_t with Q = D^T (Q = a Q + delta q^T, per key column).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunHead<T>(Head<T> head) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int keys = head.Shape.Key, width = head.Shape.Value, time = head.Shape.Time, columns = width + 1, widest = Math.Max(keys, width);
        var perKey = head.Shape.DecayWidth > 1;
        // per step: delta_t (and its ones' column), m_t and the own part v_t . delta_t (+ delta_n), read again on the way back
        using var rented = new RentedArray<T>((long)time * columns);
        using var rentedShifts = new RentedArray<T>(time);
        using var rentedOwns = new RentedArray<T>(time);
        var (deltas, shifts, owns) = (rented.Array, rentedShifts.Array, rentedOwns.Array);
        var (memory, transposed, normaliser, snapshots) = (new T[keys * width], new T[keys * width], new T[keys], new T[Steps * keys]);
        var (factors, entries, operands, others) = (new T[Steps * keys], new T[Steps * keys], new T[Steps * widest], new T[Steps * widest]);
        var (blank, sink, rowsOfBlock) = (new T[widest], new T[widest], new T[9 * widest]);
        var shift = head.Gate is null ? T.Zero : T.NegativeInfinity;
        var rows = stackalloc nint[6 * Steps];
        using SegmentedDecayGradient<T>? gradient = head.HeadTerms is not null ? new GatedLinearAttentionDecayGradient<T>(keys, width, time, head.Normalised)
            : head.Terms is not null ? new GatedLinearAttentionKeyDecayGradient<T>(keys, width, time, head.Normalised) : null;
        const int segment = GatedLinearAttentionDecayGradient.Segment;
        fixed (T* s = memory, st = transposed, n = normaliser, earlier = snapshots, a = factors, scaled = entries, block = operands, other = others,
               zero = blank, discard = sink, deltaRows = deltas, folded = rowsOfBlock)
        {
            T** rq = (T**)rows, rv = (T**)(rows + Steps), ry = (T**)(rows + 2 * Steps);
            T** sq = (T**)(rows + 3 * Steps), sv = (T**)(rows + 4 * Steps), sy = (T**)(rows + 5 * Steps);
            for (int start = 0; start < time; start += Steps)
            {
                if (start % segment == 0) gradient?.KeepEntering(start, s, n);
                for (int u = 0; u < Steps; u++)
                {
                    int t = start + u;
                    T* au = a + u * keys;
                    if (t >= time)
                    {
                        new Span<T>(au, keys).Fill(T.One);
                        new Span<T>(block + u * width, width).Clear();
                        rq[u] = zero; rv[u] = zero; ry[u] = discard;
                        continue;
                    }
                    long row = head.Row(t);
                    var entry = head.Step(t, ref shift, au);
                    shifts[t] = shift;
                    T* kk = scaled + u * keys;
                    Scale(head.K(t), entry, kk, keys);
                    T* delta = deltaRows + (long)t * columns;
                    if (head.Normalised) new ReadOnlySpan<T>(n, keys).CopyTo(new Span<T>(earlier + u * keys, keys));
                    owns[t] = Delta(head.Normalised ? n : null, au, kk, head.Q(t), head.V(t), head.Y + row * width,
                        head.Earlier + row * width, head.Dy + row * width, shift, delta, keys, width);
                    gradient?.Forward(t, au, entry);
                    new ReadOnlySpan<T>(head.V(t), width).CopyTo(new Span<T>(block + u * width, width));
                    rq[u] = delta; rv[u] = kk; ry[u] = head.Dq + row * keys;
                }
                for (int u = 0; u < Steps && start + Steps + u < time; u++) head.PrefetchRows(start + Steps + u, forward: true);
                if (perKey) Advance<T, PerColumn<T>, ReadBeforeWrite>(s, new(a, keys), block, rq, rv, ry, width, keys, folded);
                else Advance<T, Uniform<T>, ReadBeforeWrite>(s, Uniform<T>.Of(a, keys), block, rq, rv, ry, width, keys, folded);
                for (int u = 0; u < Steps && start + u < time; u++)
                {
                    int t = start + u;
                    T* delta = deltaRows + (long)t * columns;
                    // the normaliser's part over earlier steps, a~_t n~_(t-1) delta_n
                    if (head.Normalised) AccumulateProduct(a + u * keys, earlier + u * keys, delta[width], ry[u], keys);
                    Accumulate(scaled + u * keys, owns[t], ry[u], keys);
                }
            }
            new Span<T>(s, keys * width).Clear();
            new Span<T>(n, keys).Clear();
            // blocks end one before a multiple of Steps (steps past the last are blanks), so each segment's last step ends one,
            // where the state's gradient is the one coming back into the segment from after it
            for (int end = (time + Steps - 1) / Steps * Steps - 1; end >= 0; end -= Steps)
            {
                if (gradient is not null && ((end + 1) % segment == 0 || end + 1 >= time))
                {
                    int last = Math.Min(end, time - 1), begins = last / segment * segment;
                    long first = head.Row(begins);
                    gradient.Backward(last, head.Q(begins), head.K(begins), head.V(begins), head.StepStrides(perKey), deltaRows, st, n,
                        perKey ? head.Terms + first * keys : head.HeadTerms + first);
                }
                for (int u = 0; u < Steps; u++)
                {
                    int t = end - u;
                    T* au = a + u * keys;
                    if (t < 0 || t >= time)
                    {
                        new Span<T>(au, keys).Fill(T.One);
                        new Span<T>(block + u * keys, keys).Clear();
                        new Span<T>(other + u * width, width).Clear();
                        rq[u] = zero; rv[u] = zero; ry[u] = discard; sq[u] = zero; sv[u] = zero; sy[u] = discard;
                        continue;
                    }
                    long row = head.Row(t);
                    head.Carry(t, shifts, au);
                    T* kk = scaled + u * keys;
                    Scale(head.K(t), head.Entry(t, shifts[t]), kk, keys);
                    T* delta = deltaRows + (long)t * columns;
                    new ReadOnlySpan<T>(head.Q(t), keys).CopyTo(new Span<T>(block + u * keys, keys));
                    new ReadOnlySpan<T>(delta, width).CopyTo(new Span<T>(other + u * width, width));
                    rq[u] = kk; rv[u] = delta; ry[u] = head.Dv + row * width;
                    sq[u] = head.V(t); sv[u] = head.Q(t); sy[u] = head.Dk + row * keys;
                }
                for (int u = 0; u < Steps && end - Steps - u >= 0; u++) head.PrefetchRows(end - Steps - u, forward: false);
                if (perKey)
                {
                    Advance<T, PerKey<T>, ReadAfterWrite>(s, new(a, keys), block, rq, rv, ry, keys, width, folded);
                    Advance<T, PerColumn<T>, ReadBeforeWrite>(st, new(a, keys), other, sq, sv, sy, width, keys, folded);
                }
                else
                {
                    var carried = Uniform<T>.Of(a, keys);
                    Advance<T, Uniform<T>, ReadAfterWrite>(s, carried, block, rq, rv, ry, keys, width, folded);
                    Advance<T, Uniform<T>, ReadBeforeWrite>(st, carried, other, sq, sv, sy, width, keys, folded);
                }
                for (int u = 0; u < Steps && end - u >= 0; u++)
                {
                    int t = end - u;
                    if (t >= time) continue;
                    long row = head.Row(t);
                    T* delta = deltaRows + (long)t * columns;
                    // D_n = a D_n + q delta_n, the ones' column of D: its part over later steps joins dk's
                    if (head.Normalised)
                    {
                        Multiply(n, a + u * keys, n, keys);
                        Accumulate(n, T.One, sy[u], keys);
                        Accumulate(head.Q(t), delta[width], n, keys);
                    }
                    var entry = head.Entry(t, shifts[t]);
                    Scale(sy[u], entry, sy[u], keys);
                    Accumulate(head.Q(t), entry * owns[t], sy[u], keys);
                    // the key of step t enters with e^(g_t): dg_t = k_t . dk_t
                    if (head.DGate is not null) head.DGate[row] = Dot(head.K(t), sy[u], keys);
                }
            }
        }
    }

    /// <summary>into += c x y, entry by entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AccumulateProduct<T>(T* x, T* y, T c, T* into, int count) where T : unmanaged, INumber<T>
    {
        int i = 0;
        var factor = new Vector<T>(c);
        for (; i <= count - Vector<T>.Count; i += Vector<T>.Count)
            Vector.Store(VectorFused.MultiplyAdd(Vector.Load(x + i) * Vector.Load(y + i), factor, Vector.Load(into + i)), into + i);
        for (; i < count; i++) into[i] += x[i] * y[i] * c;
    }

    /// <summary>
    /// delta_t into <paramref name="delta"/> (value + 1 entries): dy e^(m), or with the normaliser n (advanced here by
    /// n = a n + k) dy / max(|n . q|, e^(-m)) and the ones' column; returns the step's own part v . delta + delta_n. With
    /// the normaliser that is (v - sign(nu) y) . dy / |nu| = ((v e_n - E) . dy) / (nu |nu|), from the earlier steps'
    /// parts of the output (E, <paramref name="earlier"/>, kept by the loop) and of nu (e_n = (a n_(t-1)) . q): a step
    /// that dominates its state has y = sign(nu) v, where v - sign(nu) y would be the rounding of the stored y over |nu|.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Delta<T>(T* n, T* a, T* k, T* q, T* v, T* y, T* earlier, T* dy, T shift, T* delta, int keys, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (n is null)
        {
            Scale(dy, T.Exp(shift), delta, width);
            return Dot(v, delta, width);
        }
        // as the loop forms it: the earlier part, then the step's own k . q
        var before = Normalise(n, a, k, q, T.Zero, keys);
        var nu = before + Dot(k, q, keys);
        var divisor = T.Max(T.Abs(nu), T.Exp(-shift));
        Scale(dy, T.One / divisor, delta, width);
        if (!(T.Abs(nu) > T.Exp(-shift)))
        {
            delta[width] = T.Zero;
            return Dot(v, delta, width);
        }
        delta[width] = -T.CopySign(T.One, nu) * Dot(dy, y, width) / divisor;
        return Difference(v, before, earlier, dy, width) / nu / divisor;
    }

    /// <summary>(v c - e) . dy.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Difference<T>(T* v, T c, T* e, T* dy, int width) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int i = 0;
        var (sums, factor) = (Vector<T>.Zero, new Vector<T>(c));
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
            sums = VectorFused.MultiplyAdd(VectorFused.MultiplyAdd(Vector.Load(v + i), factor, -Vector.Load(e + i)), Vector.Load(dy + i), sums);
        var total = Vector.Sum(sums);
        for (; i < width; i++) total = T.FusedMultiplyAdd(T.FusedMultiplyAdd(v[i], c, -e[i]), dy[i], total);
        return total;
    }
}
