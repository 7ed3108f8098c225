using Duality.Ir;
using Duality.Passes;
using Duality.Structure;
using DoubleTensor = Duality.Ir.DoubleTensor;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Training;

/// <summary>What a trained gated RNN layer stores (paper.md section 7).</summary>
/// <param name="Lambdas">Every neuron's eigenvalue, in neuron order.</param>
/// <param name="NearZero">Neurons with |lambda| within the tolerance of 0: query neurons.</param>
/// <param name="NearOne">Neurons with lambda within the tolerance of 1: memory neurons.</param>
/// <param name="Elsewhere">The other neurons.</param>
/// <param name="QuadraticFormRank">The rank of the memory neurons' quadratic forms sym(a_g a_x^T).</param>
/// <param name="QuadraticFormSpectrum">Their singular values, largest first.</param>
public sealed record GatedRnnReading(
    IReadOnlyList<double> Lambdas, int NearZero, int NearOne, int Elsewhere,
    int QuadraticFormRank, IReadOnlyList<double> QuadraticFormSpectrum)
{
    /// One line: how many lambdas lie near 1, near 0 and elsewhere, the memory quadratic forms' rank and their first ten
    /// singular values.
    public override string ToString() =>
        $"lambda: {NearOne} near 1, {NearZero} near 0, {Elsewhere} elsewhere; memory quadratic forms span rank {QuadraticFormRank} " +
        $"(singular values {string.Join(" ", QuadraticFormSpectrum.Take(10).Select(s => s.ToString("0.###e0")))})";

    /// <summary>Counts of eigenvalues in <paramref name="bins"/> equal bins over [low, high] (values outside go to the end bins).</summary>
    public int[] Histogram(int bins = 10, double low = 0, double high = 1)
    {
        var counts = new int[bins];
        foreach (var l in Lambdas) counts[Math.Clamp((int)Math.Floor((l - low) / (high - low) * bins), 0, bins - 1)]++;
        return counts;
    }

    /// <summary>The eigenvalue histogram as text, one line a bin: "[0.9, 1.0] ######".</summary>
    public string HistogramText(int bins = 10)
    {
        var counts = Histogram(bins);
        return string.Join("\n", counts.Select((c, i) =>
            $"[{(double)i / bins:0.0}, {(double)(i + 1) / bins:0.0}{(i == bins - 1 ? "]" : ")")} {new string('#', c)} {c}"));
    }
}

/// <summary>Reading a trained gated RNN of the paper's form: eigenvalues, pruning, stored quadratic forms.</summary>
public static class Analysis
{
    /// <summary>
    /// Eigenvalues near 0 and near 1 (within <paramref name="tolerance"/>), and the rank of the memory
    /// neurons' quadratic forms sym(a_g a_x^T) over the input (biases excluded): singular values above
    /// <paramref name="rankTolerance"/> times the largest.
    /// </summary>
    public static GatedRnnReading Read(Graph trained, double tolerance = 0.05, double rankTolerance = 1e-3)
    {
        var layer = GatedLayers.In(trained).FirstOrDefault(l => l.Decay is null)
            ?? throw new GraphException(new Diagnostic("not a gated RNN layer", "(graph)", "analysis",
                "analyse a graph with an input gate, a real recurrence, an output gate and a readout (Students.GatedRnn)"));
        var r = layer.Recurrence;
        var lambdas = Enumerable.Range(0, r.Width).Select(i => r.Lambda![i]).ToArray();
        var nearOne = Enumerable.Range(0, r.Width).Where(i => Math.Abs(lambdas[i] - 1) <= tolerance).ToArray();
        int nearZero = lambdas.Count(l => Math.Abs(l) <= tolerance);
        var d = layer.InputValue.InFeatures;
        var forms = new double[Math.Max(nearOne.Length, 1), d * d];
        for (int row = 0; row < nearOne.Length; row++)
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++)
                {
                    var (ga, xb) = (layer.InputValue.Weights!.Weight[nearOne[row], a], layer.InputKey.Weights!.Weight[nearOne[row], b]);
                    var (gb, xa) = (layer.InputValue.Weights.Weight[nearOne[row], b], layer.InputKey.Weights.Weight[nearOne[row], a]);
                    forms[row, a * d + b] = 0.5 * (ga * xb + gb * xa);
                }
        using var scope = NewDisposeScope();
        var spectrum = linalg.svdvals(tensor(forms)).data<double>().ToArray();
        var rank = nearOne.Length == 0 ? 0 : spectrum.Count(s => s > rankTolerance * spectrum[0]);
        return new GatedRnnReading(lambdas, nearZero, nearOne.Length, r.Width - nearZero - nearOne.Length, rank, spectrum);
    }

    /// <summary>The graph with every recurrent neuron whose eigenvalue is away from 0 and 1 silenced (its input gate rows zeroed).</summary>
    public static Graph Prune(Graph trained, double tolerance = 0.05)
    {
        var layer = GatedLayers.In(trained).FirstOrDefault(l => l.Decay is null)
            ?? throw new GraphException(new Diagnostic("not a gated RNN layer", "(graph)", "pruning", "prune a graph made by Students.GatedRnn"));
        var r = layer.Recurrence;
        var silenced = Enumerable.Range(0, r.Width).Where(i => Math.Abs(r.Lambda![i]) > tolerance && Math.Abs(r.Lambda[i] - 1) > tolerance).ToHashSet();
        if (silenced.Count == 0) return trained;
        var p = layer.InputValue;
        var w = p.Weights!.Weight;
        var weight = DoubleTensor.FromShape([w.Shape[0], w.Shape[1]], w.Data.Select((x, i) => silenced.Contains(i / w.Shape[1]) ? 0 : x).ToArray());
        var bias = p.Weights.Bias is { } b ? DoubleTensor.Vector(b.Data.Select((x, i) => silenced.Contains(i) ? 0 : x).ToArray()) : null;
        return trained.WithNode(trained.IdOf(p.Name), p with { Weights = new ProjectionWeights(weight, bias) });
    }

    /// <summary>
    /// The least-squares fit of y_t,i = sum_(a &lt;= b, c) C[i, (a,b), c] X_t[a,b] x_t,c with X_t = sum_(s &lt;= t) x_s x_s^T:
    /// the order-3 tensor of paper.md section 7, invariant to every reparametrisation of the network.
    /// Fitted on <paramref name="sequences"/> random N(0, I) sequences of <paramref name="time"/> steps; returns
    /// [outputs, d(d+1)/2 * d] in float64.
    /// </summary>
    public static Tensor CubicTensor(Graph graph, int sequences = 256, int time = 10, int seed = 99)
    {
        var width = graph.InputNodes.Single().Features;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = randn(sequences, time, width, dtype: ScalarType.Float64, generator: new torch.Generator((ulong)seed));
        var y = graph.Compile(CompileOptions.Float64).forward(x);
        var sums = (x.unsqueeze(-1) * x.unsqueeze(-2)).cumsum(1);
        var upper = SymmetricPairs.FlatPositions(width);
        var triangle = sums.reshape(sequences, time, width * width).index_select(2, tensor(upper));
        var features = (triangle.unsqueeze(-1) * x.unsqueeze(-2)).reshape(sequences * time, upper.Length * width);
        var solution = linalg.lstsq(features, y.reshape(sequences * time, y.shape[2])).Solution;
        return solution.t().contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// An attention node computing exactly the cubic form of a fitted tensor (from <see cref="CubicTensor"/>):
    /// y_t,i = sum_(s &lt;= t) sum_(a &lt;= b, c) C[i, (a,b), c] x_s,a x_s,b x_t,c. Head (i, a) has value x_a
    /// (width 1), keys x (width d), query rows C[i, (a, .), .] and writes output i; a = b terms count once.
    /// </summary>
    public static Graph AttentionFromTensor(Tensor fitted, int width, string name = "recovered")
    {
        double[] c;
        using (NewDisposeScope()) c = fitted.to_type(ScalarType.Float64).contiguous().data<double>().ToArray();
        int outputs = (int)fitted.shape[0], pairs = SymmetricPairs.Count(width), heads = outputs * width;
        var (query, key, value, output) = (new double[heads * width, width], new double[heads * width, width], new double[heads, width], new double[outputs, heads]);
        for (int i = 0; i < outputs; i++)
            for (int a = 0; a < width; a++)
            {
                int head = i * width + a;
                value[head, a] = 1;
                output[i, head] = 1;
                for (int b = 0; b < width; b++)
                {
                    key[head * width + b, b] = 1;
                    if (b < a) continue;
                    int pair = SymmetricPairs.Index(a, b, width);
                    for (int k = 0; k < width; k++) query[head * width + b, k] = c[i * pairs * width + pair * width + k];
                }
            }
        var weights = new AttentionWeights(DoubleTensor.Matrix(query), DoubleTensor.Matrix(key), DoubleTensor.Matrix(value), DoubleTensor.Matrix(output));
        return Builders.Model.Input("x", width).Attention(heads, width, 1, outFeatures: outputs, weights: weights, name: name).Build();
    }

    /// <summary>
    /// In-context regression: the least-squares order-3 tensor of a model's prediction at the query,
    /// y_j = sum_(a &lt;= b, c &lt; d_x) C[j, (a,b), c] Z[a,b] x_q,c with Z = sum_s z_s z_s^T over all tokens
    /// z = [x; y] (the query's y is 0), fitted on N(0, I) tokens; and the same tensor for the one-step
    /// gradient-descent predictor eta sum_i y_i x_i^T x_q (C[j, (x_k, y_j), x_k] = eta). Returns both, [d_y, pairs * d_x].
    /// </summary>
    public static (Tensor Model, Tensor GradientDescent) RegressionTensors(Graph graph, InContextRegressionTask task, int sequences = 4096, int seed = 98)
    {
        int dx = task.Inputs, dy = task.Outputs, width = dx + dy, time = task.Examples + 1;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var z = randn(sequences, time, width, dtype: ScalarType.Float64, generator: new torch.Generator((ulong)seed));
        z[.., time - 1, TensorIndex.Slice(dx)] = zeros(sequences, dy, dtype: ScalarType.Float64);
        var y = graph.Compile(CompileOptions.Float64).forward(z).select(1, time - 1).narrow(-1, 0, dy);
        var sums = (z.unsqueeze(-1) * z.unsqueeze(-2)).sum(1).reshape(sequences, width * width);
        var upper = SymmetricPairs.FlatPositions(width);
        var query = z.select(1, time - 1).narrow(-1, 0, dx);
        var features = (sums.index_select(1, tensor(upper)).unsqueeze(-1) * query.unsqueeze(-2)).reshape(sequences, upper.Length * dx);
        var fitted = linalg.lstsq(features, y).Solution.t().contiguous();
        var eta = task.OneStepGradientDescent().StepSize;
        var reference = zeros(dy, upper.Length * dx, dtype: ScalarType.Float64);
        for (int j = 0; j < dy; j++)
            for (int k = 0; k < dx; k++)
            {
                var pair = SymmetricPairs.Index(k, dx + j, width);
                reference[j, pair * dx + k] = eta;
            }
        return scope.MoveToOuter(fitted, reference);
    }

    /// <summary>||A - B||_F / ||B||_F between two fitted tensors.</summary>
    public static double TensorDistance(Tensor fitted, Tensor reference)
    {
        using var scope = NewDisposeScope();
        var distance = ((fitted - reference).norm() / reference.norm()).to_type(ScalarType.Float64).item<double>();
        GC.KeepAlive(fitted);
        GC.KeepAlive(reference);
        return distance;
    }

    /// <summary>A task's loss for a graph on a fixed batch (float64).</summary>
    public static double Loss(Graph graph, ITrainingTask task, int batch = 1024, int seed = 12345)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (input, target) = task.Batch(batch, new torch.Generator((ulong)seed));
        var model = graph.Compile(new CompileOptions { DType = input.dtype });
        return task.Loss(model.forward(input), target).to_type(ScalarType.Float64).item<double>();
    }
}
