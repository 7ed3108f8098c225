using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>
/// The gated RNN layer with selection-structured output gates, fused over time, never materialising
/// the [batch, time, neurons] state:
///   h_n  = lambda_n h_n + value[valueRow_n] * key[keyRow_n]          (input gate from distinct rows)
///   s_r += coefficient_m h[memory_m] h[query_m]  for each output neuron m with readout group r = group_m
/// value: [B, T, Ug], key: [B, T, Ux] (projections onto the distinct input-gate rows);
/// s: [B, T, R] (sums per distinct readout column). See <see cref="Schedule{T}"/> for how the work is
/// laid out in SIMD blocks. Parallel over the batch when there is enough work.
/// </summary>
internal static unsafe class GatedLayerLoop
{
    /// <summary>Per neuron: its value and key rows and eigenvalue; per output neuron: its memory and query neurons, coefficient and readout group.</summary>
    public sealed record Plan(int[] ValueRow, int[] KeyRow, double[] Lambda, int[] Memory, int[] Query, double[] Coefficient,
        int[] Group, int Groups)
    {
        public int Neurons => Lambda.Length;
    }

    /// <summary>
    /// Runs the layer over [batch, time]. <paramref name="state"/> ([batch, neurons]) is read as the
    /// initial state and left holding the last one; null starts from zero. Without <paramref name="parallel"/>
    /// and with a state, nothing is allocated.
    /// </summary>
    public static void Run<T>(T* value, T* key, T* sums, Schedule<T> schedule, int batch, int time, int valueWidth, int keyWidth,
        T* state = null, bool parallel = true) where T : unmanaged, INumber<T>
    {
        var shape = new Shape(time, valueWidth, keyWidth);
        if (parallel && batch > 1 && (long)time * schedule.Neurons >= 1 << 16) RunParallel(value, key, sums, schedule, batch, shape, state);
        else for (int b = 0; b < batch; b++) RunSequence(value, key, sums, schedule, b, shape, state);
    }

    private readonly record struct Shape(int Time, int ValueWidth, int KeyWidth);

    private static void RunParallel<T>(T* value, T* key, T* sums, Schedule<T> schedule, int batch, Shape shape, T* state)
        where T : unmanaged, INumber<T> =>
        System.Threading.Tasks.Parallel.For(0, batch, b => RunSequence(value, key, sums, schedule, b, shape, state));

    private static void RunSequence<T>(T* value, T* key, T* sums, Schedule<T> schedule, int b, Shape shape, T* state)
        where T : unmanaged, INumber<T>
    {
        int neurons = schedule.Neurons, groups = schedule.Groups;
        var scratch = state is null ? new T[neurons] : null;
        fixed (T* own = scratch, l = schedule.Lambda, c = schedule.Coefficient)
        {
            T* h = state is null ? own : state + (long)b * neurons;
            for (int t = 0; t < shape.Time; t++)
            {
                long step = (long)b * shape.Time + t;
                T* v = value + step * shape.ValueWidth, k = key + step * shape.KeyWidth, s = sums + step * groups;
                foreach (var block in schedule.Inputs)
                    for (int r = 0; r < block.Count; r++)
                    {
                        int n = block.Neuron + r * block.Length;
                        Advance(h + n, l + n, v[block.ValueRow + r * block.ValueStride], k + block.KeyRow + r * block.KeyStride, block.Length);
                    }
                new Span<T>(s, groups).Clear();
                foreach (var block in schedule.Outputs)
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

/// <summary>
/// Runs of neurons [Neuron + r Length, + Length) for r &lt; Count, each reading value row ValueRow + r ValueStride
/// and consecutive key rows from KeyRow + r KeyStride. A head of a lowered attention is one block.
/// </summary>
internal readonly record struct InputBlock(int Neuron, int Length, int Count, int ValueRow, int ValueStride, int KeyRow, int KeyStride);

/// <summary>
/// Runs of output neurons [Start + r Length, + Length) for r &lt; Count, each adding into group Group + r GroupStride
/// the products of consecutive memory neurons from Memory + r MemoryStride and query neurons from Query + r QueryStride.
/// </summary>
internal readonly record struct OutputBlock(int Start, int Length, int Count, int Group, int GroupStride, int Memory, int MemoryStride,
    int Query, int QueryStride);

/// <summary>
/// A plan laid out for the loop in element type T: neurons whose value row is shared and whose key rows
/// are consecutive form runs (SIMD vectors), and runs that repeat with constant strides form blocks, so a
/// lowered attention head costs a few loop headers per step instead of one per neuron.
/// </summary>
internal sealed class Schedule<T> where T : unmanaged, INumber<T>
{
    public Schedule(GatedLayerLoop.Plan plan)
    {
        Neurons = plan.Neurons;
        Groups = plan.Groups;
        Lambda = plan.Lambda.Select(T.CreateChecked).ToArray();
        Coefficient = plan.Coefficient.Select(T.CreateChecked).ToArray();
        var inputRuns = Runs(plan.Neurons, n => plan.ValueRow[n] == plan.ValueRow[n - 1] && plan.KeyRow[n] == plan.KeyRow[n - 1] + 1);
        Inputs = Blocks(inputRuns, start => [plan.ValueRow[start], plan.KeyRow[start]])
            .Select(b => new InputBlock(b.Start, b.Length, b.Count, b.First[0], b.Stride[0], b.First[1], b.Stride[1])).ToArray();
        var outputRuns = Runs(plan.Memory.Length, m => plan.Group[m] == plan.Group[m - 1]
            && plan.Memory[m] == plan.Memory[m - 1] + 1 && plan.Query[m] == plan.Query[m - 1] + 1);
        Outputs = Blocks(outputRuns, start => [plan.Group[start], plan.Memory[start], plan.Query[start]])
            .Select(b => new OutputBlock(b.Start, b.Length, b.Count, b.First[0], b.Stride[0], b.First[1], b.Stride[1], b.First[2], b.Stride[2]))
            .ToArray();
    }

    public int Neurons { get; }

    public int Groups { get; }

    public T[] Lambda { get; }

    public T[] Coefficient { get; }

    public InputBlock[] Inputs { get; }

    public OutputBlock[] Outputs { get; }

    /// <summary>Maximal runs [start, start + length) over which every sequence advances by one (where <paramref name="continues"/> holds).</summary>
    private static List<(int Start, int Length)> Runs(int count, Func<int, bool> continues)
    {
        var runs = new List<(int, int)>();
        for (int start = 0; start < count;)
        {
            int end = start + 1;
            while (end < count && continues(end)) end++;
            runs.Add((start, end - start));
            start = end;
        }
        return runs;
    }

    /// <summary>Consecutive runs of one length, adjacent, whose indices (given per run start) advance by constant strides.</summary>
    private static List<(int Start, int Length, int Count, int[] First, int[] Stride)> Blocks(List<(int Start, int Length)> runs,
        Func<int, int[]> indices)
    {
        var blocks = new List<(int, int, int, int[], int[])>();
        for (int i = 0; i < runs.Count;)
        {
            var (start, length) = runs[i];
            var first = indices(start);
            var stride = new int[first.Length];
            int count = 1;
            if (i + 1 < runs.Count && runs[i + 1].Length == length && runs[i + 1].Start == start + length)
            {
                var second = indices(runs[i + 1].Start);
                stride = second.Zip(first, (a, b) => a - b).ToArray();
                while (i + count < runs.Count && runs[i + count].Length == length && runs[i + count].Start == start + count * length
                       && indices(runs[i + count].Start).Select((x, j) => x - first[j] == count * stride[j]).All(ok => ok))
                    count++;
            }
            blocks.Add((start, length, count, first, stride));
            i += count;
        }
        return blocks;
    }
}
