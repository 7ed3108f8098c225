using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>
/// The gated RNN layer with selection-structured output gates, fused over time, never materialising
/// the [batch, time, neurons] state:
///   h_n  = lambda_n h_n + value[valueRow_n] * key[keyRow_n]          (input gate from distinct rows)
///   s_r += coefficient_m h[memory_m] h[query_m]  for each output neuron m with readout group r = group_m
/// value: [B, T, Ug], key: [B, T, Ux] (projections onto the distinct input-gate rows);
/// s: [B, T, R] (sums per distinct readout column). See <see cref="GatedLayerLayout{T}"/> for how the work is
/// laid out in SIMD blocks. Parallel over the batch when there is enough work.
/// </summary>
internal static unsafe class GatedLayerLoop
{
    /// <summary>
    /// Work per batch row (steps x neurons) from which a batch of two or more rows runs in parallel, one task per row:
    /// below it, starting the tasks costs more than the loop saves.
    /// </summary>
    public const int ParallelWork = 1 << 16;

    /// <summary>
    /// Per neuron: its value and key rows and eigenvalue, or the row of the per-step decays it reads instead (DecayRow, -1
    /// for none); per output neuron: its memory and query neurons, coefficient and readout group.
    /// </summary>
    public sealed record Plan(int[] ValueRow, int[] KeyRow, double[] Lambda, int[] Memory, int[] Query, double[] Coefficient,
        int[] Group, int Groups, double[]? LambdaImaginary = null, int[]? DecayRow = null)
    {
        public int Neurons => Lambda.Length;

        /// <summary>The row of the per-step decays neuron n reads, or -1 when its eigenvalue is fixed.</summary>
        public int DecayOf(int n) => DecayRow?[n] ?? -1;

        /// <summary>Whether some eigenvalue is complex (the state then has imaginary parts, read out as real parts).</summary>
        public bool Complex => LambdaImaginary is { } im && im.Any(x => x != 0);
    }

    /// <summary>
    /// Runs the layer over [batch, time]. <paramref name="state"/> ([batch, <see cref="GatedLayerLayout{T}.StateSize"/>],
    /// laid out by the layout) starts at zero and is left holding the last state; null starts from zero. Without <paramref name="parallel"/>
    /// and with a state, nothing is allocated. <paramref name="decay"/>: [batch, time, decayWidth], the per-step eigenvalues
    /// of the neurons with an input-dependent decay (null when there are none).
    /// </summary>
    public static void Run<T>(T* value, T* key, T* sums, GatedLayerLayout<T> layout, int batch, int time, int valueWidth, int keyWidth,
        T* state = null, bool parallel = true, T* decay = null, int decayWidth = 0) where T : unmanaged, INumber<T>
    {
        var shape = new Shape<T>(time, valueWidth, keyWidth, decay, decayWidth);
        if (parallel && batch > 1 && (long)time * layout.Neurons >= ParallelWork) RunParallel(value, key, sums, layout, batch, shape, state);
        else for (int b = 0; b < batch; b++) RunSequence(value, key, sums, layout, b, shape, state);
    }

    private readonly struct Shape<T>(int time, int valueWidth, int keyWidth, T* decay, int decayWidth) where T : unmanaged
    {
        public int Time { get; } = time;

        public int ValueWidth { get; } = valueWidth;

        public int KeyWidth { get; } = keyWidth;

        public T* Decay { get; } = decay;

        public int DecayWidth { get; } = decayWidth;
    }

    private static void RunParallel<T>(T* value, T* key, T* sums, GatedLayerLayout<T> layout, int batch, Shape<T> shape, T* state)
        where T : unmanaged, INumber<T> =>
        KernelTeam.For(batch, b => RunSequence(value, key, sums, layout, b, shape, state));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunSequence<T>(T* value, T* key, T* sums, GatedLayerLayout<T> layout, int b, Shape<T> shape, T* state)
        where T : unmanaged, INumber<T>
    {
        int groups = layout.Groups;
        var scratch = state is null ? new T[layout.StateSize] : null;
        fixed (T* own = scratch, l = layout.Lambda, c = layout.Coefficient)
        {
            T* h = state is null ? own : state + (long)b * layout.StateSize;
            for (int t = 0; t < shape.Time; t++)
            {
                long step = (long)b * shape.Time + t;
                T* v = value + step * shape.ValueWidth, k = key + step * shape.KeyWidth, s = sums + step * groups;
                T* decay = shape.Decay + step * shape.DecayWidth;
                foreach (var block in layout.Inputs)
                    for (int r = 0; r < block.Count; r++)
                    {
                        int n = block.Neuron + r * block.Length;
                        Advance(h + n, l + n, v[block.ValueRow + r * block.ValueStride], k + block.KeyRow + r * block.KeyStride, block.Length);
                    }
                new Span<T>(s, groups).Clear();
                // a transposed block is attention's recurrent form: state of run r, element j at Neuron + j Runs + r
                foreach (var head in layout.Transposed)
                    if (head.LambdaImaginary == T.Zero)
                        RecurrentAttentionStep.Advance(h + head.Neuron, head.DecayRow < 0 ? head.Lambda : decay[head.DecayRow], k + head.KeyRow,
                            v + head.ValueRow, h + head.Query, s + head.Group, head.Length, head.Runs, head.Coefficient, accumulate: true);
                    else
                        RecurrentAttentionStep.Rotate(h + head.Neuron, h + layout.Neurons + head.Neuron, head.Lambda, head.LambdaImaginary, k + head.KeyRow,
                            v + head.ValueRow, h + head.Query, s + head.Group, head.Length, head.Runs, head.Coefficient, accumulate: true);
                foreach (var (inputs, outputs, uniform) in layout.Paired)
                    for (int r = 0; r < inputs.Count; r++)
                    {
                        int n = inputs.Neuron + r * inputs.Length, m = outputs.Start + r * outputs.Length;
                        T vr = v[inputs.ValueRow + r * inputs.ValueStride];
                        T* kr = k + inputs.KeyRow + r * inputs.KeyStride, q = h + outputs.Query + r * outputs.QueryStride;
                        s[outputs.Group + r * outputs.GroupStride] += uniform
                            ? AdvanceAndDot(h + n, l[n], vr, kr, c[m], q, inputs.Length)
                            : AdvanceAndDot(h + n, l + n, vr, kr, c + m, q, inputs.Length);
                    }
                foreach (var block in layout.Outputs)
                    for (int r = 0; r < block.Count; r++)
                        s[block.Group + r * block.GroupStride] += Dot(c + block.Start + r * block.Length,
                            h + block.Memory + r * block.MemoryStride, h + block.Query + r * block.QueryStride, block.Length);
            }
        }
    }

    /// <summary>h_i = l_i h_i + v k_i for i &lt; n.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Advance<T>(T* h, T* l, T v, T* k, int n) where T : unmanaged, INumber<T>
    {
        int i = 0;
        if (n >= Vector<T>.Count)
        {
            var vv = new Vector<T>(v);
            for (; i <= n - Vector<T>.Count; i += Vector<T>.Count)
                Vector.Store(Vector.Load(l + i) * Vector.Load(h + i) + vv * Vector.Load(k + i), h + i);
        }
        for (; i < n; i++) h[i] = l[i] * h[i] + v * k[i];
    }

    /// <summary>h_i = l_i h_i + v k_i, then sum_i c_i h_i q_i, for i &lt; n: a paired block's run in one pass over h.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T AdvanceAndDot<T>(T* h, T* l, T v, T* k, T* c, T* q, int n) where T : unmanaged, INumber<T>
    {
        int i = 0;
        var total = T.Zero;
        if (n >= Vector<T>.Count)
        {
            var (vv, acc) = (new Vector<T>(v), Vector<T>.Zero);
            for (; i <= n - Vector<T>.Count; i += Vector<T>.Count)
            {
                var updated = Vector.Load(l + i) * Vector.Load(h + i) + vv * Vector.Load(k + i);
                Vector.Store(updated, h + i);
                acc += Vector.Load(c + i) * updated * Vector.Load(q + i);
            }
            total = Vector.Sum(acc);
        }
        for (; i < n; i++)
        {
            h[i] = l[i] * h[i] + v * k[i];
            total += c[i] * h[i] * q[i];
        }
        return total;
    }

    /// <summary><see cref="AdvanceAndDot{T}(T*, T*, T, T*, T*, T*, int)"/> with one eigenvalue and one coefficient for the run.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T AdvanceAndDot<T>(T* h, T l, T v, T* k, T c, T* q, int n) where T : unmanaged, INumber<T>
    {
        int i = 0;
        var total = T.Zero;
        if (n >= Vector<T>.Count)
        {
            var (vl, vv, acc) = (new Vector<T>(l), new Vector<T>(v), Vector<T>.Zero);
            for (; i <= n - Vector<T>.Count; i += Vector<T>.Count)
            {
                var updated = vl * Vector.Load(h + i) + vv * Vector.Load(k + i);
                Vector.Store(updated, h + i);
                acc += updated * Vector.Load(q + i);
            }
            total = Vector.Sum(acc);
        }
        for (; i < n; i++)
        {
            h[i] = l * h[i] + v * k[i];
            total += h[i] * q[i];
        }
        return c * total;
    }

    /// <summary>sum_i c_i a_i b_i for i &lt; n.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Dot<T>(T* c, T* a, T* b, int n) where T : unmanaged, INumber<T>
    {
        int i = 0;
        var total = T.Zero;
        if (n >= Vector<T>.Count)
        {
            var acc = Vector<T>.Zero;
            for (; i <= n - Vector<T>.Count; i += Vector<T>.Count)
                acc += Vector.Load(c + i) * Vector.Load(a + i) * Vector.Load(b + i);
            total = Vector.Sum(acc);
        }
        for (; i < n; i++) total += c[i] * a[i] * b[i];
        return total;
    }
}
