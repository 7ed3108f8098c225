using System.Numerics;

namespace Duality.Kernels;

/// <summary>
/// Runs of neurons [Neuron + r Length, + Length) for r &lt; Count, each reading value row ValueRow + r ValueStride
/// and consecutive key rows from KeyRow + r KeyStride. A head of a lowered attention is one block.
/// </summary>
internal readonly record struct InputBlock(int Neuron, int Length, int Count, int ValueRow, int ValueStride, int KeyRow, int KeyStride)
{
    public bool Holds(int neuron) => neuron >= Neuron && neuron < Neuron + Count * Length;
}

/// <summary>
/// Runs of output neurons [Start + r Length, + Length) for r &lt; Count, each adding into group Group + r GroupStride
/// the products of consecutive memory neurons from Memory + r MemoryStride and query neurons from Query + r QueryStride.
/// </summary>
internal readonly record struct OutputBlock(int Start, int Length, int Count, int Group, int GroupStride, int Memory, int MemoryStride,
    int Query, int QueryStride);

/// <summary>
/// Runs r &lt; Runs of Length neurons whose state is kept transposed at Neuron + j Runs + r, reading value
/// ValueRow + r, keys KeyRow + j, queries h[Query + j], and adding into group Group + r.
/// </summary>
internal readonly record struct TransposedBlock<T>(int Neuron, int Runs, int Length, int ValueRow, int KeyRow, int Query, int Group,
    T Lambda, T LambdaImaginary, T Coefficient, int DecayRow) where T : unmanaged, INumber<T>;

/// <summary>
/// A plan laid out for the loop in element type T: neurons whose value row is shared and whose key rows
/// are consecutive form runs (SIMD vectors), and runs that repeat with constant strides form blocks, so a
/// lowered attention head costs a few loop headers per step instead of one per neuron.
/// </summary>
internal sealed class GatedLayerLayout<T> where T : unmanaged, INumber<T>
{
    private readonly OutputBlock[] unpairedOutputs;

    public GatedLayerLayout(GatedLayerLoop.Plan plan)
    {
        Neurons = plan.Neurons;
        Groups = plan.Groups;
        Lambda = plan.Lambda.Select(T.CreateChecked).ToArray();
        Coefficient = plan.Coefficient.Select(T.CreateChecked).ToArray();
        var inputRuns = Runs(plan.Neurons, n => plan.ValueRow[n] == plan.ValueRow[n - 1] && plan.KeyRow[n] == plan.KeyRow[n - 1] + 1);
        // runs join a block only with runs of the same eigenvalue (memory and query neurons stay apart); runs with
        // different per-step decays may join, such blocks being split into single runs below
        bool SameEigenvalue(int a, int b) => plan.Lambda[a] == plan.Lambda[b] && (plan.LambdaImaginary?[a] ?? 0) == (plan.LambdaImaginary?[b] ?? 0);
        Inputs = Blocks(inputRuns, start => [plan.ValueRow[start], plan.KeyRow[start]], SameEigenvalue)
            .Select(b => new InputBlock(b.Start, b.Length, b.Count, b.First[0], b.Stride[0], b.First[1], b.Stride[1])).ToArray();
        var outputRuns = Runs(plan.Memory.Length, m => plan.Group[m] == plan.Group[m - 1]
            && plan.Memory[m] == plan.Memory[m - 1] + 1 && plan.Query[m] == plan.Query[m - 1] + 1);
        Outputs = Blocks(outputRuns, start => [plan.Group[start], plan.Memory[start], plan.Query[start]])
            .Select(b => new OutputBlock(b.Start, b.Length, b.Count, b.First[0], b.Stride[0], b.First[1], b.Stride[1], b.First[2], b.Stride[2]))
            .ToArray();
        var paired = Pair(plan);
        unpairedOutputs = Outputs.Except(paired.Select(p => p.Outputs)).ToArray();
        // complex eigenvalues and per-step decays run only in transposed blocks: a run alone is one whenever it is uniform
        if (plan.Complex || plan.DecayRow is not null) paired = paired.SelectMany(p => Transposable(p.Inputs, p.Outputs, p.Uniform) ? [p] : SingleRuns(p, plan)).ToArray();
        var transposable = paired.ToLookup(p => Transposable(p.Inputs, p.Outputs, p.Uniform));
        Transposed = transposable[true]
            .Select(p => new TransposedBlock<T>(p.Inputs.Neuron, p.Inputs.Count, p.Inputs.Length, p.Inputs.ValueRow, p.Inputs.KeyRow,
                p.Outputs.Query, p.Outputs.Group, T.CreateChecked(plan.Lambda[p.Inputs.Neuron]),
                T.CreateChecked(plan.LambdaImaginary?[p.Inputs.Neuron] ?? 0), T.CreateChecked(plan.Coefficient[p.Outputs.Start]),
                plan.DecayOf(p.Inputs.Neuron)))
            .ToArray();
        Paired = transposable[false].ToArray();
        Inputs = Inputs.Where(i => !paired.Any(p => i.Holds(p.Inputs.Neuron))).ToArray();
        Outputs = unpairedOutputs;
        StateSize = plan.Complex ? 2 * Neurons : Neurons;
        var transposed = transposable[true].Select(p => p.Inputs).ToList();
        Supported = Enumerable.Range(0, Neurons).All(n => (plan.LambdaImaginary?[n] ?? 0) == 0 && plan.DecayOf(n) < 0 || transposed.Any(i => i.Holds(n)));
    }

    /// <summary>
    /// Whether the loop can run the plan: only when every neuron with a complex eigenvalue or an input-dependent decay
    /// lies in a transposed block (a lowered head); plans of fixed real eigenvalues always.
    /// </summary>
    public bool Supported { get; }

    /// <summary>Values of state per batch row: the neurons, and with complex eigenvalues their imaginary parts after them.</summary>
    public int StateSize { get; }

    /// <summary>
    /// A paired block whose runs read consecutive value rows and the same key rows, add into consecutive
    /// groups with the same query neurons, with one eigenvalue and one coefficient: a head of a lowered
    /// attention. Its neurons are read by no other block (so they may be stored transposed).
    /// </summary>
    private bool Transposable(InputBlock i, OutputBlock o, bool uniform)
    {
        if (!uniform) return false;
        if (i.Count > 1 && (i.ValueStride != 1 || i.KeyStride != 0 || o.QueryStride != 0 || o.GroupStride != 1)) return false;
        bool ReadsInside(OutputBlock other) => Enumerable.Range(0, other.Count).Any(r => Enumerable.Range(0, other.Length)
            .Any(n => i.Holds(other.Memory + r * other.MemoryStride + n) || i.Holds(other.Query + r * other.QueryStride + n)));
        return !i.Holds(o.Query) && !unpairedOutputs.Any(ReadsInside);
    }

    /// <summary>A paired block as one pair per run (a run alone is always transposable when uniform): for complex eigenvalues and decays.</summary>
    private static IEnumerable<(InputBlock Inputs, OutputBlock Outputs, bool Uniform)> SingleRuns(
        (InputBlock Inputs, OutputBlock Outputs, bool Uniform) pair, GatedLayerLoop.Plan plan)
    {
        var (i, o) = (pair.Inputs, pair.Outputs);
        for (int r = 0; r < i.Count; r++)
        {
            var input = new InputBlock(i.Neuron + r * i.Length, i.Length, 1, i.ValueRow + r * i.ValueStride, 0, i.KeyRow + r * i.KeyStride, 0);
            var output = new OutputBlock(o.Start + r * o.Length, o.Length, 1, o.Group + r * o.GroupStride, 0, o.Memory + r * o.MemoryStride, 0,
                o.Query + r * o.QueryStride, 0);
            yield return (input, output, Uniform(plan, input, output));
        }
    }

    private static bool Uniform(GatedLayerLoop.Plan plan, InputBlock i, OutputBlock o)
    {
        var lambdas = Enumerable.Range(i.Neuron, i.Count * i.Length).Select(n => (plan.Lambda[n], plan.LambdaImaginary?[n] ?? 0, plan.DecayOf(n)));
        var coefficients = Enumerable.Range(o.Start, o.Count * o.Length).Select(m => plan.Coefficient[m]);
        return lambdas.Distinct().Count() == 1 && coefficients.Distinct().Count() == 1;
    }

    /// <summary>Paired blocks run as attention's recurrent form, their state transposed.</summary>
    public TransposedBlock<T>[] Transposed { get; }

    /// <summary>
    /// Input blocks whose runs are exactly the memory runs of an output block, so each run is updated and
    /// read in one pass; only where the output block's query neurons lie outside every paired input block
    /// (they are updated before the pairs, with the other input blocks).
    /// </summary>
    private (InputBlock Inputs, OutputBlock Outputs, bool Uniform)[] Pair(GatedLayerLoop.Plan plan)
    {
        var candidates = Outputs
            .Select(o => (Outputs: o, Inputs: Inputs.FirstOrDefault(i => i.Count == o.Count && i.Length == o.Length && i.Neuron == o.Memory
                                                                          && (o.Count == 1 || o.MemoryStride == o.Length) && i.Count > 0)))
            .Where(p => p.Inputs.Count > 0)
            .ToList();
        var paired = candidates.Select(p => p.Inputs).ToHashSet();
        bool InsidePaired(int neuron) => paired.Any(i => i.Holds(neuron));
        bool QueriesOutside(OutputBlock o) =>
            Enumerable.Range(0, o.Count).All(r => !Enumerable.Range(o.Query + r * o.QueryStride, o.Length).Any(InsidePaired));
        return candidates.Where(p => QueriesOutside(p.Outputs)).GroupBy(p => p.Inputs).Select(g => g.First())
            .Select(p => (p.Inputs, p.Outputs, Uniform(plan, p.Inputs, p.Outputs))).ToArray();
    }

    /// <summary>Input and output blocks computed together, with whether their eigenvalues and coefficients are each one value.</summary>
    public (InputBlock Inputs, OutputBlock Outputs, bool Uniform)[] Paired { get; }

    public int Neurons { get; }

    public int Groups { get; }

    public T[] Lambda { get; }

    public T[] Coefficient { get; }

    /// <summary>The input blocks not in <see cref="Paired"/>, computed first in every step.</summary>
    public InputBlock[] Inputs { get; }

    /// <summary>The output blocks not in <see cref="Paired"/>, computed last in every step.</summary>
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

    /// <summary>Consecutive runs of one length, adjacent, that <paramref name="joins"/> allows together, whose indices (given per run start) advance by constant strides.</summary>
    private static List<(int Start, int Length, int Count, int[] First, int[] Stride)> Blocks(List<(int Start, int Length)> runs,
        Func<int, int[]> indices, Func<int, int, bool>? joins = null)
    {
        joins ??= (_, _) => true;
        var blocks = new List<(int, int, int, int[], int[])>();
        for (int i = 0; i < runs.Count;)
        {
            var (start, length) = runs[i];
            var first = indices(start);
            var stride = new int[first.Length];
            int count = 1;
            if (i + 1 < runs.Count && runs[i + 1].Length == length && runs[i + 1].Start == start + length && joins(start, runs[i + 1].Start))
            {
                var second = indices(runs[i + 1].Start);
                stride = second.Zip(first, (a, b) => a - b).ToArray();
                while (i + count < runs.Count && runs[i + count].Length == length && runs[i + count].Start == start + count * length
                       && joins(start, runs[i + count].Start) && indices(runs[i + count].Start).Select((x, j) => x - first[j] == count * stride[j]).All(ok => ok))
                    count++;
            }
            blocks.Add((start, length, count, first, stride));
            i += count;
        }
        return blocks;
    }
}
