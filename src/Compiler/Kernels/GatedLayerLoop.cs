using System.Numerics;

namespace Duality.Kernels;

/// <summary>
/// The gated RNN layer with selection-structured output gates, fused over time, never materialising
/// the [batch, time, neurons] state:
///   h_n  = lambda_n h_n + value[valueRow_n] * key[keyRow_n]          (input gate from distinct rows)
///   s_r += coefficient_m h[memory_m] h[query_m]  for each output neuron m with readout group r = group_m
/// value: [B, T, Ug], key: [B, T, Ux] (projections onto the distinct input-gate rows);
/// s: [B, T, R] (sums per distinct readout column). Parallel over the batch.
/// </summary>
internal static unsafe class GatedLayerLoop
{
    public sealed record Plan(int[] ValueRow, int[] KeyRow, double[] Lambda, int[] Memory, int[] Query, double[] Coefficient,
        int[] Group, int Groups);

    public static void Run<T>(T* value, T* key, T* sums, Plan plan, int batch, int time, int valueWidth, int keyWidth)
        where T : unmanaged, INumber<T>
    {
        int neurons = plan.Lambda.Length, outputs = plan.Memory.Length, groups = plan.Groups;
        var lambda = plan.Lambda.Select(T.CreateChecked).ToArray();
        var coefficient = plan.Coefficient.Select(T.CreateChecked).ToArray();
        System.Threading.Tasks.Parallel.For(0, batch, b =>
        {
            var state = new T[neurons];
            fixed (T* h = state, l = lambda, c = coefficient)
            fixed (int* valueRow = plan.ValueRow, keyRow = plan.KeyRow, memory = plan.Memory, query = plan.Query, group = plan.Group)
                for (int t = 0; t < time; t++)
                {
                    T* v = value + ((long)b * time + t) * valueWidth, k = key + ((long)b * time + t) * keyWidth;
                    T* s = sums + ((long)b * time + t) * groups;
                    for (int n = 0; n < neurons; n++) h[n] = l[n] * h[n] + v[valueRow[n]] * k[keyRow[n]];
                    for (int r = 0; r < groups; r++) s[r] = T.Zero;
                    for (int m = 0; m < outputs; m++) s[group[m]] += c[m] * h[memory[m]] * h[query[m]];
                }
        });
    }
}
