using Duality.Builders;
using Duality.Ir;
using Duality.Passes;
using Duality.Torch;
using DoubleTensor = Duality.Ir.DoubleTensor;
using Duality.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Training;

/// <summary>
/// In-context linear regression: per sequence W ~ N(0, I) [dy, dx]; tokens [x_i; W x_i] with x_i ~ U(-1, 1)^dx
/// for i &lt; n, then a query [x_q; 0]; the target is W x_q and the loss the squared error at the query.
/// </summary>
public sealed class InContextRegressionTask(int inputs, int outputs = 1, int examples = 10, ScalarType dtype = ScalarType.Float32)
    : ITrainingTask
{
    /// dx, the width of each x_i.
    public int Inputs => inputs;
    /// dy, the width of each y_i = W x_i.
    public int Outputs => outputs;
    /// n, the (x_i, y_i) pairs before the query; a sequence has n + 1 tokens of dx + dy features.
    public int Examples => examples;

    /// Tokens [size, examples + 1, inputs + outputs] (the query's y part zero) and targets W x_q [size, outputs], a new
    /// W per sequence.
    public (Tensor Input, Tensor Target) Batch(int size, torch.Generator random)
    {
        // the temporaries held by a scope until the batch is made: one that only its finaliser frees could be freed by a
        // collection while libtorch still reads it
        using var scope = NewDisposeScope();
        var w = randn(size, outputs, inputs, dtype: dtype, generator: random);
        var x = rand(size, examples + 1, inputs, dtype: dtype, generator: random).Times(2).sub_(HeldScalars.One);
        var y = x.matmul(w.transpose(1, 2));
        var mask = ones(size, examples + 1, outputs, dtype: dtype);
        mask[.., examples] = zeros(size, outputs, dtype: dtype);
        return (cat([x, y * mask], -1).MoveToOuterDisposeScope(), y.select(1, examples).MoveToOuterDisposeScope());
    }

    /// <summary>The model predicts at every token, [batch, examples + 1, outputs]; only the query's prediction is scored.</summary>
    public long[] ExpectedOutputShape(Tensor input, Tensor target) => Scored(target);

    /// <summary>The squared error at the query; output [batch, examples + 1, outputs], target [batch, outputs], any other output shape is refused.</summary>
    public Tensor Loss(Tensor output, Tensor target)
    {
        OutputShape.Require(ToString(), output.shape, Scored(target));
        return (output.select(1, examples) - target).Squared().sum(-1).mean();
    }

    private long[] Scored(Tensor target) => [target.shape[0], examples + 1, outputs];

    /// "InContextRegressionTask(inputs dx, outputs dy, examples n)".
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
        using var scope = NewDisposeScope();
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
