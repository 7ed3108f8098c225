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
/// exponent at most 0 whatever the gates' scale, as in the forward loop. Layouts as in the loop; dq, dk: [batch, time, heads, key]; dv: [batch, time, heads, value].
/// Parallel over batch rows and heads.
/// </summary>
internal static unsafe class GatedLinearAttentionReverse
{
    public static void Run<T>(T* q, T* k, T* v, T* decay, T* gate, bool normalised, T* y, T* dy, T* dq, T* dk, T* dv, T* terms, T* headTerms,
        Shape shape) where T : unmanaged, IFloatingPointIeee754<T>
        => HeadPairs.Run(shape.Batch, shape.Heads, (long)shape.Time * shape.Key * shape.Value,
            (b, h) =>
            {
                var head = new Head<T>(q, k, v, decay, gate, normalised, y, dy, dq, dk, dv, terms, headTerms, shape, b, h);
                if (shape.DecayWidth <= 1) RunUniform(head);
                else RunPerKey(head);
            });

    /// <summary>One (batch row, head) pair's pointers and sizes.</summary>
    private readonly struct Head<T>(T* q, T* k, T* v, T* decay, T* gate, bool normalised, T* y, T* dy, T* dq, T* dk, T* dv, T* terms,
        T* headTerms, Shape shape, int b, int h) where T : unmanaged, IFloatingPointIeee754<T>
    {
        public readonly T* Q = q, K = k, V = v, Gate = gate, Y = y, Dy = dy, Dq = dq, Dk = dk, Dv = dv, Terms = terms, HeadTerms = headTerms;
        public readonly bool Normalised = normalised;
        public readonly Shape Shape = shape;
        private readonly T* decay = decay;
        private readonly int b = b, h = h;

        public long Row(int t) => ((long)b * Shape.Time + t) * Shape.Heads + h;

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
            Prefetch(Q + row * keys, keys); Prefetch(K + row * keys, keys); Prefetch(V + row * width, width);
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
    /// One decay per step (or none): each product is the forward loop's <see cref="Advance{T, TFactors, TRead}"/> on a
    /// state of its own, four steps per pass over it. dq_t - kk_t (v_t . delta_t) = (a~_t P_(t-1))^T delta_t with P = S~^T
    /// (P = a P + v kk^T), forward in time; back in time dv_t = D_t^T kk_t with D = a D + q delta^T, and
    /// a~_(t+1) D_(t+1) v_t = (a~_(t+1) Q_(t+1))^T v_t with Q = D^T (Q = a Q + delta q^T).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunUniform<T>(Head<T> head) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int keys = head.Shape.Key, width = head.Shape.Value, time = head.Shape.Time, columns = width + 1, widest = Math.Max(keys, width);
        using var rented = new RentedArray<T>((long)time * columns);
        using var rentedShifts = new RentedArray<T>(time);
        using var rentedOwns = new RentedArray<T>(time);
        var (deltas, shifts, owns) = (rented.Array, rentedShifts.Array, rentedOwns.Array);
        var (memory, transposed, normaliser, snapshots) = (new T[keys * width], new T[keys * width], new T[keys], new T[Steps * keys]);
        var (factors, entries, operands, others) = (new T[keys], new T[Steps * keys], new T[Steps * widest], new T[Steps * widest]);
        var (blank, sink, uniform) = (new T[widest], new T[widest], new T[Steps]);
        var shift = head.Gate is null ? T.Zero : T.NegativeInfinity;
        var rows = stackalloc nint[6 * Steps];
        using var gradient = head.HeadTerms is null ? null : new GatedLinearAttentionDecayGradient<T>(keys, width, time, head.Normalised);
        const int segment = GatedLinearAttentionDecayGradient.Segment;
        fixed (T* s = memory, st = transposed, n = normaliser, earlier = snapshots, a = factors, scaled = entries, block = operands, other = others,
               zero = blank, discard = sink, deltaRows = deltas)
        {
            T** rq = (T**)rows, rv = (T**)(rows + Steps), ry = (T**)(rows + 2 * Steps);
            T** sq = (T**)(rows + 3 * Steps), sv = (T**)(rows + 4 * Steps), sy = (T**)(rows + 5 * Steps);
            for (int start = 0; start < time; start += Steps)
            {
                if (start % segment == 0) gradient?.KeepEntering(start, s, n);
                for (int u = 0; u < Steps; u++)
                {
                    int t = start + u;
                    if (t >= time)
                    {
                        uniform[u] = T.One;
                        new Span<T>(block + u * width, width).Clear();
                        rq[u] = zero; rv[u] = zero; ry[u] = discard;
                        continue;
                    }
                    long row = head.Row(t);
                    var entry = head.Step(t, ref shift, a);
                    (uniform[u], shifts[t]) = (a[0], shift);
                    T* kk = scaled + u * keys;
                    Scale(head.K + row * keys, entry, kk, keys);
                    T* delta = deltaRows + (long)t * columns;
                    if (head.Normalised) new ReadOnlySpan<T>(n, keys).CopyTo(new Span<T>(earlier + u * keys, keys));
                    owns[t] = Delta(head.Normalised ? n : null, a, kk, head.Q + row * keys, head.V + row * width, head.Y + row * width,
                        head.Dy + row * width, shift, delta, keys, width);
                    gradient?.Forward(t, a[0], entry, head.Q + row * keys, delta);
                    new ReadOnlySpan<T>(head.V + row * width, width).CopyTo(new Span<T>(block + u * width, width));
                    rq[u] = delta; rv[u] = kk; ry[u] = head.Dq + row * keys;
                }
                for (int u = 0; u < Steps && start + Steps + u < time; u++) head.PrefetchRows(start + Steps + u, forward: true);
                Advance<T, Uniform<T>, ReadBeforeWrite>(s, new Uniform<T>(uniform[0], uniform[1], uniform[2], uniform[3]), block, rq, rv, ry, width, keys);
                for (int u = 0; u < Steps && start + u < time; u++)
                {
                    int t = start + u;
                    long row = head.Row(t);
                    T* delta = deltaRows + (long)t * columns;
                    // the normaliser's part over earlier steps, a~_t n~_(t-1) delta_n
                    if (head.Normalised) Accumulate(earlier + u * keys, uniform[u] * delta[width], ry[u], keys);
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
                    int last = Math.Min(end, time - 1);
                    long first = head.Row(last / segment * segment);
                    gradient.Backward(last, head.Q + first * keys, head.K + first * keys, head.V + first * width, head.Shape.Heads, deltaRows, st, n,
                        head.HeadTerms + first);
                }
                for (int u = 0; u < Steps; u++)
                {
                    int t = end - u;
                    if (t < 0 || t >= time)
                    {
                        uniform[u] = T.One;
                        new Span<T>(block + u * keys, keys).Clear();
                        new Span<T>(other + u * width, width).Clear();
                        rq[u] = zero; rv[u] = zero; ry[u] = discard; sq[u] = zero; sv[u] = zero; sy[u] = discard;
                        continue;
                    }
                    long row = head.Row(t);
                    head.Carry(t, shifts, a);
                    uniform[u] = a[0];
                    T* kk = scaled + u * keys;
                    Scale(head.K + row * keys, head.Entry(t, shifts[t]), kk, keys);
                    T* delta = deltaRows + (long)t * columns;
                    new ReadOnlySpan<T>(head.Q + row * keys, keys).CopyTo(new Span<T>(block + u * keys, keys));
                    new ReadOnlySpan<T>(delta, width).CopyTo(new Span<T>(other + u * width, width));
                    rq[u] = kk; rv[u] = delta; ry[u] = head.Dv + row * width;
                    sq[u] = head.V + row * width; sv[u] = head.Q + row * keys; sy[u] = head.Dk + row * keys;
                }
                for (int u = 0; u < Steps && end - Steps - u >= 0; u++) head.PrefetchRows(end - Steps - u, forward: false);
                var carried = new Uniform<T>(uniform[0], uniform[1], uniform[2], uniform[3]);
                Advance<T, Uniform<T>, ReadAfterWrite>(s, carried, block, rq, rv, ry, keys, width);
                Advance<T, Uniform<T>, ReadBeforeWrite>(st, carried, other, sq, sv, sy, width, keys);
                for (int u = 0; u < Steps && end - u >= 0; u++)
                {
                    int t = end - u;
                    if (t >= time) continue;
                    long row = head.Row(t);
                    T* delta = deltaRows + (long)t * columns;
                    var deltaN = head.Normalised ? delta[width] : T.Zero;
                    // D_n = a D_n + q delta_n, the ones' column of D: its part over later steps joins dk's
                    if (head.Normalised)
                    {
                        Scale(n, uniform[u], n, keys);
                        Accumulate(n, T.One, sy[u], keys);
                        Accumulate(head.Q + row * keys, deltaN, n, keys);
                    }
                    var entry = head.Entry(t, shifts[t]);
                    Scale(sy[u], entry, sy[u], keys);
                    Accumulate(head.Q + row * keys, entry * owns[t], sy[u], keys);
                }
            }
        }
    }

    /// <summary>
    /// Decays per key channel: the forward sweep advances S~ row by row and reads dq off each row; the sweep back advances D
    /// row by row and reads dk off each row and dv down its columns.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunPerKey<T>(Head<T> head) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int keys = head.Shape.Key, width = head.Shape.Value, time = head.Shape.Time, columns = width + 1;
        // per step: delta_t (and its ones' column) and m_t, both read again on the way back
        using var rented = new RentedArray<T>((long)time * columns);
        using var rentedShifts = new RentedArray<T>(time);
        using var rentedOwns = new RentedArray<T>(time);
        var (deltas, shifts, owns) = (rented.Array, rentedShifts.Array, rentedOwns.Array);
        var (memory, normaliser, before, factors, entries) = (new T[keys * width], new T[keys], new T[keys], new T[keys], new T[keys]);
        using var gradient = head.Terms is null ? null : new GatedLinearAttentionKeyDecayGradient<T>(keys, width, time, head.Normalised);
        const int segment = GatedLinearAttentionDecayGradient.Segment;
        var shift = head.Gate is null ? T.Zero : T.NegativeInfinity;
        fixed (T* s = memory, n = normaliser, earlier = before, a = factors, kk = entries, deltaRows = deltas)
        {
            for (int t = 0; t < time; t++)
            {
                if (t % segment == 0) gradient?.KeepEntering(t, s, n);
                long row = head.Row(t);
                var entry = head.Step(t, ref shift, a);
                shifts[t] = shift;
                Scale(head.K + row * keys, entry, kk, keys);
                T* delta = deltaRows + (long)t * columns;
                if (head.Normalised) new ReadOnlySpan<T>(n, keys).CopyTo(new Span<T>(earlier, keys));
                var own = owns[t] = Delta(head.Normalised ? n : null, a, kk, head.Q + row * keys, head.V + row * width, head.Y + row * width,
                    head.Dy + row * width, shift, delta, keys, width);
                gradient?.Forward(t, a, entry, head.Q + row * keys, delta);
                AdvanceForward(s, a, kk, head.V + row * width, delta, head.Normalised ? earlier : null, head.Normalised ? delta[width] : T.Zero, own,
                    head.Dq + row * keys, keys, width);
            }
            new Span<T>(s, keys * width).Clear();
            new Span<T>(n, keys).Clear();
            for (int t = time - 1; t >= 0; t--)
            {
                long row = head.Row(t);
                // the log-decays' gradient over a segment when the sweep reaches its last step, D holding D_(last+1)
                if (gradient is not null && (t == time - 1 || (t + 1) % segment == 0))
                {
                    long first = head.Row(t / segment * segment);
                    gradient.Backward(t, head.Q + first * keys, head.K + first * keys, head.V + first * width, head.Shape.Heads, deltaRows, s, n,
                        head.Terms + first * keys);
                }
                head.Carry(t, shifts, a);
                var entry = head.Entry(t, shifts[t]);
                Scale(head.K + row * keys, entry, kk, keys);
                T* delta = deltaRows + (long)t * columns;
                var deltaN = head.Normalised ? delta[width] : T.Zero;
                AdvanceBack(s, a, head.Q + row * keys, delta, head.Normalised ? n : null, deltaN, owns[t], head.V + row * width, kk,
                    entry, head.Dk + row * keys, head.Dv + row * width, keys, width);
            }
        }
    }

    /// <summary>
    /// S~[j, :] = a[j] S~[j, :] + kk[j] v, reading e[j] = a[j] S~_(t-1)[j, :] . delta (+ a[j] n_(t-1)[j] deltaN with the
    /// normaliser's earlier value): dq[j] = e[j] + kk[j] own (own = v . delta + deltaN).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AdvanceForward<T>(T* s, T* a, T* kk, T* v, T* delta, T* n, T deltaN, T own, T* dq, int keys, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int count = Vector<T>.Count;
        for (int j = 0; j < keys; j++)
        {
            T* row = s + j * width;
            Vector<T> f = new(a[j]), kj = new(kk[j]), sum = Vector<T>.Zero;
            int i = 0;
            for (; i <= width - count; i += count)
            {
                var c = f * Vector.Load(row + i);
                sum = VectorFused.MultiplyAdd(c, Vector.Load(delta + i), sum);
                Vector.Store(VectorFused.MultiplyAdd(kj, Vector.Load(v + i), c), row + i);
            }
            var earlier = Vector.Sum(sum);
            for (; i < width; i++)
            {
                var c = a[j] * row[i];
                earlier += c * delta[i];
                row[i] = c + kk[j] * v[i];
            }
            if (n is not null) earlier += a[j] * n[j] * deltaN;
            dq[j] = earlier + kk[j] * own;
        }
    }

    /// <summary>
    /// D[j, :] = a[j] D[j, :] + q[j] delta (and D_n[j] = a[j] D_n[j] + q[j] deltaN, the ones' column), reading
    /// e[j] = entry (a[j] D_(t+1)[j, :] . v + a[j] D_n,(t+1)[j]): dk[j] = e[j] + entry q[j] own,
    /// and dv = sum_j kk[j] D[j, :].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AdvanceBack<T>(T* d, T* a, T* q, T* delta, T* dn, T deltaN, T own, T* v, T* kk, T entry, T* dk, T* dv, int keys, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int count = Vector<T>.Count;
        new Span<T>(dv, width).Clear();
        for (int j = 0; j < keys; j++)
        {
            T* row = d + j * width;
            Vector<T> f = new(a[j]), qj = new(q[j]), kj = new(kk[j]), sum = Vector<T>.Zero;
            int i = 0;
            for (; i <= width - count; i += count)
            {
                var c = f * Vector.Load(row + i);
                sum = VectorFused.MultiplyAdd(c, Vector.Load(v + i), sum);
                c = VectorFused.MultiplyAdd(qj, Vector.Load(delta + i), c);
                Vector.Store(c, row + i);
                Vector.Store(VectorFused.MultiplyAdd(kj, c, Vector.Load(dv + i)), dv + i);
            }
            T later = Vector.Sum(sum);
            for (; i < width; i++)
            {
                var c = a[j] * row[i];
                later += c * v[i];
                row[i] = c + q[j] * delta[i];
                dv[i] += kk[j] * row[i];
            }
            if (dn is not null)
            {
                var carried = a[j] * dn[j];
                later += carried;
                dn[j] = carried + q[j] * deltaN;
            }
            later *= entry;
            dk[j] = later + entry * q[j] * own;
        }
    }

    /// <summary>
    /// delta_t into <paramref name="delta"/> (value + 1 entries): dy e^(m), or with the normaliser n (advanced here by
    /// n = a n + k) dy / max(|n . q|, e^(-m)) and the ones' column; returns the step's own part v . delta + delta_n. With
    /// the normaliser that is (v - sign(nu) y) . dy / |nu|, the difference taken first: a step that dominates its state
    /// has y = sign(nu) v, and the two products apart would cancel to the rounding of |v| |dy| / |nu|.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Delta<T>(T* n, T* a, T* k, T* q, T* v, T* y, T* dy, T shift, T* delta, int keys, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (n is null)
        {
            Scale(dy, T.Exp(shift), delta, width);
            return Dot(v, delta, width);
        }
        var nu = Normalise(n, a, k, q, Dot(k, q, keys), keys);
        var divisor = T.Max(T.Abs(nu), T.Exp(-shift));
        Scale(dy, T.One / divisor, delta, width);
        if (!(T.Abs(nu) > T.Exp(-shift)))
        {
            delta[width] = T.Zero;
            return Dot(v, delta, width);
        }
        var sign = T.CopySign(T.One, nu);
        delta[width] = -sign * Dot(dy, y, width) / divisor;
        return Difference(v, y, sign, dy, width) / divisor;
    }

    /// <summary>(v - sign y) . dy.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Difference<T>(T* v, T* y, T sign, T* dy, int width) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int i = 0;
        var (sums, signs) = (Vector<T>.Zero, new Vector<T>(sign));
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
            sums = VectorFused.MultiplyAdd(Vector.Load(v + i) - signs * Vector.Load(y + i), Vector.Load(dy + i), sums);
        var total = Vector.Sum(sums);
        for (; i < width; i++) total = T.FusedMultiplyAdd(v[i] - sign * y[i], dy[i], total);
        return total;
    }
}
