using System.Numerics;

namespace Duality.Kernels;

/// <summary>
/// The gated RNN layer with selection-structured output gates, fused over time, never materialising
/// the [batch, time, neurons] state:
///   h_n  = lambda_n h_n + value[valueRow_n] * key[keyRow_n]          (input gate from distinct rows)
///   s_r += coefficient_m h[memory_m] h[query_m]  for each output neuron m with readout group r = group_m
/// value: [B, T, Ug], key: [B, T, Ux] (projections onto the distinct input-gate rows);
/// s: [B, T, R] (sums per distinct readout column). Neurons whose value row is shared and whose key
/// rows are consecutive form runs, and so do output neurons with consecutive memory and query
/// neurons in one group; runs are computed with SIMD vectors (a lowered attention head is one run
/// per value or output row). Parallel over the batch.
/// </summary>
internal static unsafe class GatedLayerLoop
{
    public sealed record Plan(int[] ValueRow, int[] KeyRow, double[] Lambda, int[] Memory, int[] Query, double[] Coefficient,
        int[] Group, int Groups);

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

    public static void Run<T>(T* value, T* key, T* sums, Plan plan, int batch, int time, int valueWidth, int keyWidth)
        where T : unmanaged, INumber<T>
    {
        int neurons = plan.Lambda.Length, groups = plan.Groups;
        var lambda = plan.Lambda.Select(T.CreateChecked).ToArray();
        var coefficient = plan.Coefficient.Select(T.CreateChecked).ToArray();
        var inputRuns = Runs(neurons, n => plan.ValueRow[n] == plan.ValueRow[n - 1] && plan.KeyRow[n] == plan.KeyRow[n - 1] + 1).ToArray();
        var outputRuns = Runs(plan.Memory.Length, m => plan.Group[m] == plan.Group[m - 1]
            && plan.Memory[m] == plan.Memory[m - 1] + 1 && plan.Query[m] == plan.Query[m - 1] + 1).ToArray();
        System.Threading.Tasks.Parallel.For(0, batch, b =>
        {
            var state = new T[neurons];
            fixed (T* h = state, l = lambda, c = coefficient)
            fixed (int* valueRow = plan.ValueRow, keyRow = plan.KeyRow, memory = plan.Memory, query = plan.Query, group = plan.Group)
                for (int t = 0; t < time; t++)
                {
                    T* v = value + ((long)b * time + t) * valueWidth, k = key + ((long)b * time + t) * keyWidth;
                    T* s = sums + ((long)b * time + t) * groups;
                    foreach (var (start, length) in inputRuns)
                        Advance(h + start, l + start, v[valueRow[start]], k + keyRow[start], length);
                    for (int r = 0; r < groups; r++) s[r] = T.Zero;
                    foreach (var (start, length) in outputRuns)
                        s[group[start]] += Dot(c + start, h + memory[start], h + query[start], length);
                }
        });
    }

    /// <summary>h_i = l_i h_i + v k_i for i &lt; n.</summary>
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
