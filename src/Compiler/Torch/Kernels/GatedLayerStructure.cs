using Duality.Ir;
using Duality.Passes;

namespace Duality.Kernels;

/// <summary>
/// The structure of a gated RNN layer's weights (input gate u = (A_g x + a_g) * phi(A_x x + a_x), diagonal
/// recurrence (complex eigenvalues read out as real parts), output gate z = (B_g h) * (B_x h), readout y = D z) that the fused loop needs:
/// the distinct rows of [A_g | a_g] and [A_x | a_x], and the distinct columns of D. Present only when
/// every row of B_g and B_x selects at most one neuron.
/// </summary>
internal sealed record GatedLayerStructure(GatedLayerLoop.Plan Plan, double[][] ValueRows, double[][] KeyRows, double[][] ReadoutColumns,
    double[][] DecayRows)
{
    /// <summary>
    /// The structure of a layer whose nodes carry weights (the graph's, or a module's read back); null without it. With an
    /// input-dependent decay, the memory neurons come first, each reading a distinct row of [P | p] (the decay is sigmoid(P x + p)).
    /// </summary>
    public static GatedLayerStructure? Of(RaiseAttention.Layer layer)
    {
        // neurons with an input-dependent decay have no eigenvalue: the stand-in is never read
        var eigenvalues = layer.Eigenvalues();
        var real = eigenvalues.Select(e => e.Re).ToArray();
        var imaginary = layer.Recurrence.State == StateKind.Complex ? eigenvalues.Select(e => e.Im).ToArray() : null;
        var (decayRows, decayRow) = layer.Decay is { } split ? DecayRowsOf(split, layer.Neurons) : ([], null);
        return Read(Augmented(layer.InputValue), Augmented(layer.InputKey), real, Matrix(layer.OutputValue.Weights!.Weight),
            Matrix(layer.OutputQuery.Weights!.Weight), Matrix(layer.ReadoutNode.Weights!.Weight), imaginary, decayRows, decayRow);
    }

    /// <summary>The distinct rows of the decay projection [P | p], and per neuron the row it reads (-1: a fixed eigenvalue).</summary>
    private static (double[][], int[]) DecayRowsOf(RaiseAttention.SplitByDecay split, int neurons)
    {
        var (rows, index) = Distinct(Rows(Augmented(split.Projection)));
        var row = Enumerable.Range(0, neurons).Select(n => n >= split.Memory.Width ? -1 : index[index.Length == 1 ? 0 : n]).ToArray();
        return (rows, row);
    }

    private static double[,] Matrix(DoubleTensor t)
    {
        var m = new double[t.Shape[0], t.Shape[1]];
        for (int r = 0; r < t.Shape[0]; r++)
            for (int c = 0; c < t.Shape[1]; c++) m[r, c] = t[r, c];
        return m;
    }

    /// <summary>[W | b]: a projection's rows with their biases as a last column.</summary>
    private static double[,] Augmented(Projection p)
    {
        var (w, b) = (p.Weights!.Weight, p.Weights.Bias);
        var m = new double[p.OutFeatures, p.InFeatures + 1];
        for (int r = 0; r < p.OutFeatures; r++)
        {
            for (int c = 0; c < p.InFeatures; c++) m[r, c] = w[r, c];
            m[r, p.InFeatures] = b is null ? 0 : b[r];
        }
        return m;
    }

    /// <summary>Null when an output gate row mixes several neurons.</summary>
    private static GatedLayerStructure? Read(double[,] valueAugmented, double[,] keyAugmented, double[] lambda,
        double[,] outputValue, double[,] outputQuery, double[,] readout, double[]? lambdaImaginary, double[][] decayRows, int[]? decayRow)
    {
        if (!Selects(outputValue) || !Selects(outputQuery)) return null;
        var (valueRows, valueIndex) = Distinct(Rows(valueAugmented));
        var (keyRows, keyIndex) = Distinct(Rows(keyAugmented));
        var (columns, group) = Distinct(Columns(readout));
        int outputs = outputValue.GetLength(0);
        var memory = new int[outputs];
        var query = new int[outputs];
        var coefficient = new double[outputs];
        for (int m = 0; m < outputs; m++)
        {
            memory[m] = Selected(outputValue, m);
            query[m] = Selected(outputQuery, m);
            coefficient[m] = outputValue[m, memory[m]] * outputQuery[m, query[m]];
        }
        var plan = new GatedLayerLoop.Plan(valueIndex, keyIndex, lambda, memory, query, coefficient, group, columns.Length, lambdaImaginary, decayRow);
        return new GatedLayerStructure(plan, valueRows, keyRows, columns, decayRows);
    }

    private static bool Selects(double[,] gate)
    {
        for (int m = 0; m < gate.GetLength(0); m++)
        {
            int nonzero = 0;
            for (int n = 0; n < gate.GetLength(1); n++) if (gate[m, n] != 0) nonzero++;
            if (nonzero > 1) return false;
        }
        return true;
    }

    /// <summary>The neuron a selection row reads (neuron 0, with coefficient 0, for an all-zero row).</summary>
    private static int Selected(double[,] gate, int m)
    {
        for (int n = 0; n < gate.GetLength(1); n++) if (gate[m, n] != 0) return n;
        return 0;
    }

    private static double[][] Rows(double[,] matrix) =>
        Enumerable.Range(0, matrix.GetLength(0)).Select(r => Enumerable.Range(0, matrix.GetLength(1)).Select(c => matrix[r, c]).ToArray()).ToArray();

    private static double[][] Columns(double[,] matrix) =>
        Enumerable.Range(0, matrix.GetLength(1)).Select(c => Enumerable.Range(0, matrix.GetLength(0)).Select(r => matrix[r, c]).ToArray()).ToArray();

    /// <summary>The distinct vectors in order of first appearance, and each vector's index among them.</summary>
    private static (double[][] Distinct, int[] Index) Distinct(double[][] vectors)
    {
        var seen = new Dictionary<double[], int>(VectorComparer.Instance);
        var distinct = new List<double[]>();
        var index = new int[vectors.Length];
        for (int i = 0; i < vectors.Length; i++)
        {
            if (!seen.TryGetValue(vectors[i], out var j))
            {
                seen[vectors[i]] = j = distinct.Count;
                distinct.Add(vectors[i]);
            }
            index[i] = j;
        }
        return (distinct.ToArray(), index);
    }

    private sealed class VectorComparer : IEqualityComparer<double[]>
    {
        public static readonly VectorComparer Instance = new();

        public bool Equals(double[]? a, double[]? b) => a!.AsSpan().SequenceEqual(b);

        public int GetHashCode(double[] v)
        {
            var hash = new HashCode();
            foreach (var x in v) hash.Add(x == 0 ? 0.0 : x);
            return hash.ToHashCode();
        }
    }
}
