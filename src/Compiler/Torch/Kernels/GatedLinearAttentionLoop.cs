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
        var (blank, sink) = (new T[Math.Max(dk, dv)], new T[dv]);
        var shift = gate is null ? T.Zero : T.NegativeInfinity;
        var rows = stackalloc nint[3 * Steps];
        fixed (T* s = memory, n = normaliser, a = factors, scaled = keys, zero = blank, discard = sink)
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
                if (width <= 1 && normalised) Advance<T, Uniform<T>, ReadBeforeWrite>(s, Uniform<T>.Of(a, dk), scaled, qs, vs, ys, dk, dv);
                else if (width <= 1) Advance(s, Uniform<T>.Of(a, dk), scaled, qs, vs, ys, dk, dv);
                else if (normalised) Advance<T, PerKey<T>, ReadBeforeWrite>(s, new(a, dk), scaled, qs, vs, ys, dk, dv);
                else Advance(s, new PerKey<T>(a, dk), scaled, qs, vs, ys, dk, dv);
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
    /// Four steps on S[j, i] (key j, value i, at j width + i): S = a_u[j] S + k_u[j] v_u[i], y_u[i] = sum_j q_u[j] S[j, i],
    /// for u = 0..3 in order. Vectorised across i, two vectors at a time, so each row of S streams through once. Too many
    /// locals to be inlined, so compiled optimised from its first call (a tier-0 copy would run the first calls 10x slower).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Advance<T, TFactors>(T* s, TFactors a, T* k, T** q, T** v, T** y, int keys, int width)
        where T : unmanaged, INumber<T> where TFactors : struct, IFactors<T>
        => Advance<T, TFactors, ReadAfterWrite>(s, a, k, q, v, y, keys, width);

    /// <summary>
    /// <see cref="Advance{T, TFactors}"/>, reading y_u either after step u's write (S_u) or before it (a_u S_(u-1), the
    /// sum over every earlier step alone: the reverse pass's terms whose step-u parts would otherwise cancel). The columns
    /// go two 512-bit vectors at a time where those run at full rate, the rest two Vector&lt;T&gt; at a time, the last one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Advance<T, TFactors, TRead>(T* s, TFactors a, T* k, T** q, T** v, T** y, int keys, int width)
        where T : unmanaged, INumber<T> where TFactors : struct, IFactors<T> where TRead : struct, IReadOrder
    {
        int i = 0;
        if (WideLanes<T>.Faster) i = Columns<T, Vector512<T>, WideLanes<T>, TFactors, TRead>(s, a, k, q, v, y, keys, width, i);
        i = Columns<T, Vector<T>, NativeLanes<T>, TFactors, TRead>(s, a, k, q, v, y, keys, width, i);
        var before = default(TRead).BeforeWrite;
        T* k0 = k, k1 = k + keys, k2 = k + 2 * keys, k3 = k + 3 * keys;
        T* q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
        T* v0 = v[0], v1 = v[1], v2 = v[2], v3 = v[3];
        T* o0 = y[0], o1 = y[1], o2 = y[2], o3 = y[3];
        for (; i < width; i++)
        {
            T y0 = T.Zero, y1 = T.Zero, y2 = T.Zero, y3 = T.Zero;
            for (int j = 0; j < keys; j++)
            {
                T* cell = s + j * width + i;
                var c = a.At(0, j, i) * *cell;
                if (before) y0 += q0[j] * c;
                c += k0[j] * v0[i];
                if (!before) y0 += q0[j] * c;
                c *= a.At(1, j, i);
                if (before) y1 += q1[j] * c;
                c += k1[j] * v1[i];
                if (!before) y1 += q1[j] * c;
                c *= a.At(2, j, i);
                if (before) y2 += q2[j] * c;
                c += k2[j] * v2[i];
                if (!before) y2 += q2[j] * c;
                c *= a.At(3, j, i);
                if (before) y3 += q3[j] * c;
                c += k3[j] * v3[i];
                if (!before) y3 += q3[j] * c;
                *cell = c;
            }
            (o0[i], o1[i], o2[i], o3[i]) = (y0, y1, y2, y3);
        }
    }

    /// <summary>
    /// The four steps on the columns from <paramref name="i"/>, two vectors of <typeparamref name="TLanes"/> at a time while
    /// two fit; returns the first column left. Compiled optimised from its first call, like its caller (a quick-compiled
    /// copy would call its steps' writes instead of inlining them).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int Columns<T, TV, TLanes, TFactors, TRead>(T* s, TFactors a, T* k, T** q, T** v, T** y, int keys, int width, int i)
        where T : unmanaged, INumber<T> where TV : struct where TLanes : ILanes<TV, T> where TFactors : struct, IFactors<T>
        where TRead : struct, IReadOrder
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
                Write<T, TV, TLanes, TFactors, TRead>(ref c0, ref c1, a, 0, j, i, TLanes.Broadcast(k0[j]), TLanes.Broadcast(q0[j]), x0, x1, ref y00, ref y01);
                Write<T, TV, TLanes, TFactors, TRead>(ref c0, ref c1, a, 1, j, i, TLanes.Broadcast(k1[j]), TLanes.Broadcast(q1[j]), w0, w1, ref y10, ref y11);
                Write<T, TV, TLanes, TFactors, TRead>(ref c0, ref c1, a, 2, j, i, TLanes.Broadcast(k2[j]), TLanes.Broadcast(q2[j]), z0, z1, ref y20, ref y21);
                Write<T, TV, TLanes, TFactors, TRead>(ref c0, ref c1, a, 3, j, i, TLanes.Broadcast(k3[j]), TLanes.Broadcast(q3[j]), r0, r1, ref y30, ref y31);
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

    /// <summary>
    /// Step u on two vectors of row j of S from column i: c = f c + k x, y += q c, with y read after the write or before it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Write<T, TV, TLanes, TFactors, TRead>(ref TV c0, ref TV c1, TFactors a, int u, int j, int i, TV k, TV q,
        TV x0, TV x1, ref TV y0, ref TV y1)
        where T : unmanaged, INumber<T> where TV : struct where TLanes : ILanes<TV, T> where TFactors : struct, IFactors<T>
        where TRead : struct, IReadOrder
    {
        var f0 = a.Across<TV, TLanes>(u, j, i);
        var f1 = a.ByColumn ? a.Across<TV, TLanes>(u, j, i + TLanes.Count) : f0;
        if (default(TRead).BeforeWrite)
        {
            c0 = TLanes.Multiply(c0, f0); c1 = TLanes.Multiply(c1, f1);
            y0 = TLanes.MultiplyAdd(q, c0, y0); y1 = TLanes.MultiplyAdd(q, c1, y1);
            c0 = TLanes.MultiplyAdd(k, x0, c0); c1 = TLanes.MultiplyAdd(k, x1, c1);
        }
        else
        {
            c0 = TLanes.MultiplyAdd(f0, c0, TLanes.Multiply(k, x0)); c1 = TLanes.MultiplyAdd(f1, c1, TLanes.Multiply(k, x1));
            y0 = TLanes.MultiplyAdd(q, c0, y0); y1 = TLanes.MultiplyAdd(q, c1, y1);
        }
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

        /// <summary>Whether the factors change along a row.</summary>
        bool ByColumn { get; }
    }

    internal readonly struct Uniform<T>(T a0, T a1, T a2, T a3) : IFactors<T> where T : unmanaged, INumber<T>
    {
        /// <summary>The four steps' factors from the first entry of each of their rows, <paramref name="stride"/> apart.</summary>
        public static Uniform<T> Of(T* a, int stride) => new(a[0], a[stride], a[2 * stride], a[3 * stride]);

        public T At(int u, int j, int i) => u switch { 0 => a0, 1 => a1, 2 => a2, _ => a3 };
        public TV Across<TV, TLanes>(int u, int j, int i) where TV : struct where TLanes : ILanes<TV, T> => TLanes.Broadcast(At(u, j, i));
        public bool ByColumn => false;
    }

    /// <summary>Step u's factors at a + u stride, one per row.</summary>
    internal readonly struct PerKey<T>(T* a, int stride) : IFactors<T> where T : unmanaged, INumber<T>
    {
        public T At(int u, int j, int i) => a[u * stride + j];
        public TV Across<TV, TLanes>(int u, int j, int i) where TV : struct where TLanes : ILanes<TV, T> => TLanes.Broadcast(a[u * stride + j]);
        public bool ByColumn => false;
    }

    /// <summary>Step u's factors at a + u stride, one per column.</summary>
    internal readonly struct PerColumn<T>(T* a, int stride) : IFactors<T> where T : unmanaged, INumber<T>
    {
        public T At(int u, int j, int i) => a[u * stride + i];
        public TV Across<TV, TLanes>(int u, int j, int i) where TV : struct where TLanes : ILanes<TV, T> => TLanes.Load(a + u * stride + i);
        public bool ByColumn => true;
    }
}
