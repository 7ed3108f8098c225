using Duality.Builders;
using Duality.Ir;
using Duality.Passes;
using Duality.Torch;
using DoubleTensor = Duality.Ir.DoubleTensor;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Training;

/// <summary>
/// Teacher-student: a random causal linear attention teacher (W_Q, W_K, W_V entries N(0, 1/d)), inputs
/// x_t ~ N(0, I) over <c>Time</c> steps; the loss is the mean squared error divided by the teacher's
/// output variance, so 1 is the loss of predicting zero.
/// </summary>
public sealed class TeacherStudentTask : ITrainingTask
{
    private readonly CompiledGraph teacher;

    public TeacherStudentTask(int width, int time = 10, int seed = 0, ScalarType dtype = ScalarType.Float32)
    {
        (Width, Time, DType) = (width, time, dtype);
        var random = new Random(seed);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()) / Math.Sqrt(width);
        DoubleTensor Matrix() => DoubleTensor.FromShape([width, width], Enumerable.Range(0, width * width).Select(_ => Normal()).ToArray());
        Teacher = Model.Input("x", width).Attention(1, width, width, weights: new AttentionWeights(Matrix(), Matrix(), Matrix(), null), name: "teacher").Build();
        teacher = Teacher.Compile(new CompileOptions { DType = dtype });
        using var _ = no_grad();
        var (x, y) = Batch(4096, new torch.Generator((ulong)seed + 17));
        OutputVariance = y.var().to_type(ScalarType.Float64).item<double>() is var v and > 0 ? v : 1.0;
    }

    public int Width { get; }
    public int Time { get; }
    public ScalarType DType { get; }

    /// <summary>The teacher attention, with its weights.</summary>
    public Graph Teacher { get; }

    public double OutputVariance { get; }

    public (Tensor Input, Tensor Target) Batch(int size, torch.Generator random)
    {
        var x = randn(size, Time, Width, dtype: DType, generator: random);
        using var _ = no_grad();
        return (x, teacher.forward(x));
    }

    /// <summary>Output and target [batch, time, width]; any other output shape is refused.</summary>
    public Tensor Loss(Tensor output, Tensor target)
    {
        OutputShape.Require(ToString(), output.shape, target.shape);
        return (output - target).square().mean() / OutputVariance;
    }

    public override string ToString() => $"{nameof(TeacherStudentTask)}(width {Width}, time {Time})";
}

/// <summary>
/// In-context linear regression: per sequence W ~ N(0, I) [dy, dx]; tokens [x_i; W x_i] with x_i ~ U(-1, 1)^dx
/// for i &lt; n, then a query [x_q; 0]; the target is W x_q and the loss the squared error at the query.
/// </summary>
public sealed class InContextRegressionTask(int inputs, int outputs = 1, int examples = 10, ScalarType dtype = ScalarType.Float32)
    : ITrainingTask
{
    public int Inputs => inputs;
    public int Outputs => outputs;
    public int Examples => examples;

    public (Tensor Input, Tensor Target) Batch(int size, torch.Generator random)
    {
        var w = randn(size, outputs, inputs, dtype: dtype, generator: random);
        var x = rand(size, examples + 1, inputs, dtype: dtype, generator: random) * 2 - 1;
        var y = x.matmul(w.transpose(1, 2));
        var mask = ones(size, examples + 1, outputs, dtype: dtype);
        mask[.., examples] = zeros(size, outputs, dtype: dtype);
        return (cat([x, y * mask], -1), y.select(1, examples));
    }

    /// <summary>The model predicts at every token, [batch, examples + 1, outputs]; only the query's prediction is scored.</summary>
    public long[] ExpectedOutputShape(Tensor input, Tensor target) => Scored(target);

    /// <summary>The squared error at the query; output [batch, examples + 1, outputs], target [batch, outputs], any other output shape is refused.</summary>
    public Tensor Loss(Tensor output, Tensor target)
    {
        OutputShape.Require(ToString(), output.shape, Scored(target));
        return (output.select(1, examples) - target).square().sum(-1).mean();
    }

    private long[] Scored(Tensor target) => [target.shape[0], examples + 1, outputs];

    public override string ToString() => $"{nameof(InContextRegressionTask)}(inputs {inputs}, outputs {outputs}, examples {examples})";

    /// <summary>
    /// The loss of the best one-step gradient-descent predictor y = eta sum_i y_i x_i^T x_q (from W = 0):
    /// eta = E[y . g] / E[g . g], loss = E|y|^2 - eta E[y . g], expectations estimated on <paramref name="samples"/> sequences in float64.
    /// </summary>
    public double OneStepGradientDescentLoss(int samples = 200_000, int seed = 0) => OneStepGradientDescent(samples, seed).Loss;

    /// <summary>The best one-step gradient-descent predictor's loss and its step size eta (see <see cref="OneStepGradientDescentLoss"/>).</summary>
    public (double Loss, double StepSize) OneStepGradientDescent(int samples = 200_000, int seed = 0)
    {
        using var _ = no_grad();
        var task = new InContextRegressionTask(inputs, outputs, examples, ScalarType.Float64);
        var (tokens, target) = task.Batch(samples, new torch.Generator((ulong)seed));
        var x = tokens.narrow(-1, 0, inputs);
        var y = tokens.narrow(-1, inputs, outputs).narrow(1, 0, examples);
        var query = x.select(1, examples);
        var g = (y * x.narrow(1, 0, examples).matmul(query.unsqueeze(-1))).sum(1);
        var yg = (target * g).sum(-1).mean().item<double>();
        var gg = (g * g).sum(-1).mean().item<double>();
        var yy = (target * target).sum(-1).mean().item<double>();
        return (yy - yg * yg / gg, yg / gg);
    }
}

/// <summary>The models compared on the tasks.</summary>
public static class Students
{
    /// <summary>
    /// The gated RNN layer of the paper: u = (A_g x + a) * (A_x x + b), h_t = lambda h_{t-1} + u_t (trainable,
    /// lambda ~ U(0, 1)), z = (B_g h) * (B_x h), y = D z, with <paramref name="neurons"/> recurrent and
    /// <paramref name="outputNeurons"/> output neurons.
    /// </summary>
    public static Graph GatedRnn(int input, int neurons, int outputNeurons, int output, int seed = 0)
    {
        var random = new Random(seed);
        var lambda = DoubleTensor.Vector(Enumerable.Range(0, neurons).Select(_ => random.NextDouble()).ToArray());
        var graph = Model.Input("x", input)
            .Gate(value: v => v.Projection(neurons, name: "a_g"), gate: g => g.Projection(neurons, name: "a_x"), name: "input_gate")
            .LinearRecurrence(lambda: lambda, name: "memory")
            .Gate(value: v => v.Projection(outputNeurons, bias: false, name: "b_g"), gate: g => g.Projection(outputNeurons, bias: false, name: "b_x"),
                name: "output_gate")
            .Projection(output, bias: false, name: "readout")
            .Build();
        return InitializeWeights.Run(graph, seed);
    }

    /// <summary>One causal linear attention head with an output projection.</summary>
    public static Graph LinearAttention(int input, int output, int seed = 0) =>
        InitializeWeights.Run(Model.Input("x", input).Attention(1, input, input, outFeatures: output, name: "attention").Build(), seed);

    public static nn.Module<Tensor, Tensor> Lstm(int input, int hidden, int output) => new RecurrentBaseline("lstm", input, hidden, output);

    public static nn.Module<Tensor, Tensor> Gru(int input, int hidden, int output) => new RecurrentBaseline("gru", input, hidden, output);

    /// <summary>TorchSharp's own LSTM or GRU followed by a linear readout; x: [batch, time, input].</summary>
    private sealed class RecurrentBaseline : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module? lstm, gru;
        private readonly TorchSharp.Modules.Linear readout;

        public RecurrentBaseline(string kind, int input, int hidden, int output) : base(kind)
        {
            if (kind == "lstm") lstm = nn.LSTM(input, hidden, batchFirst: true);
            else gru = nn.GRU(input, hidden, batchFirst: true);
            readout = nn.Linear(hidden, output);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            var states = lstm is TorchSharp.Modules.LSTM l ? l.forward(x).Item1 : ((TorchSharp.Modules.GRU)gru!).forward(x).Item1;
            return readout.forward(states);
        }
    }
}
