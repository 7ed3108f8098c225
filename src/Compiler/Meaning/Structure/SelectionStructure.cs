using Duality.Ir;

namespace Duality.Structure;

/// <summary>
/// The structure of a gated layer's weights (input gate u = (A_g x + a_g) * phi(A_x x + a_x), diagonal recurrence
/// (complex eigenvalues read out as real parts), output gate z = (B_g h) * (B_x h), readout y = D z) that a fused loop
/// needs: the distinct rows of [A_g | a_g] and [A_x | a_x] and which one each neuron reads, the distinct columns of D,
/// and per output neuron m the memory neuron and query neuron it multiplies with coefficient B_g[m, .] B_x[m, .].
/// Present only when every row of B_g and B_x selects at most one neuron. Rows and columns are distinct exactly, so
/// running on the distinct ones computes the same sums.
/// </summary>
internal sealed record SelectionStructure(
    int[] ValueRow, int[] KeyRow, double[] Lambda, double[]? LambdaImaginary, int[]? DecayRow,
    int[] Memory, int[] Query, double[] Coefficient, int[] Group,
    double[][] ValueRows, double[][] KeyRows, double[][] ReadoutColumns, double[][] DecayRows)
{
    /// <summary>Readout groups: the distinct columns of D.</summary>
    public int Groups => ReadoutColumns.Length;

    /// <summary>
    /// The structure of a layer whose nodes carry weights (the graph's, or a module's read back); null without it. With an
    /// input-dependent decay, the memory neurons come first, each reading a distinct row of [P | p] (the decay is sigmoid(P x + p)).
    /// </summary>
    public static SelectionStructure? Of(GatedLayer layer)
    {
        var (outputValue, outputQuery) = (Matrix(layer.OutputValue.Weights!.Weight), Matrix(layer.OutputQuery.Weights!.Weight));
        if (!Selects(outputValue) || !Selects(outputQuery)) return null;
        // neurons with an input-dependent decay have no eigenvalue: the stand-in is never read
        var eigenvalues = layer.Eigenvalues();
        var imaginary = layer.Recurrence.State == StateKind.Complex ? eigenvalues.Select(e => e.Im).ToArray() : null;
        var (decayRows, decayRow) = layer.Decay is { } split ? DecayRowsOf(split, layer.Neurons) : ([], null);
        var (valueRows, valueIndex) = VectorClasses.Of(Rows(Augmented(layer.InputValue)), tolerance: 0);
        var (keyRows, keyIndex) = VectorClasses.Of(Rows(Augmented(layer.InputKey)), tolerance: 0);
        var (columns, group) = VectorClasses.Of(Columns(Matrix(layer.Readout.Weights!.Weight)), tolerance: 0);
        int outputs = outputValue.GetLength(0);
        var (memory, query, coefficient) = (new int[outputs], new int[outputs], new double[outputs]);
        for (int m = 0; m < outputs; m++)
        {
            memory[m] = Selected(outputValue, m);
            query[m] = Selected(outputQuery, m);
            coefficient[m] = outputValue[m, memory[m]] * outputQuery[m, query[m]];
        }
        return new SelectionStructure(valueIndex, keyIndex, eigenvalues.Select(e => e.Re).ToArray(), imaginary, decayRow,
            memory, query, coefficient, group, valueRows, keyRows, columns, decayRows);
    }

    /// <summary>The distinct rows of the decay projection [P | p], and per neuron the row it reads (-1: a fixed eigenvalue).</summary>
    private static (double[][], int[]) DecayRowsOf(DecaySplit split, int neurons)
    {
        var (rows, index) = VectorClasses.Of(Rows(Augmented(split.Projection)), tolerance: 0);
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
}
