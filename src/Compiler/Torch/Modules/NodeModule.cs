using Duality.Kernels;
using Duality.Execution;
using Duality.Ir;
using Duality.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// The compiled form of one node. Inputs and outputs are sequences [batch, time, features]; shapes
/// were proven when the graph was built, so forward holds no shape checks. Stateful nodes
/// (recurrences, causal attention) also run one step at a time on [batch, 1, features] with an
/// explicit state.
/// </summary>
internal abstract class NodeModule(string name) : nn.Module(name)
{
    public abstract Tensor Forward(IReadOnlyList<Tensor> inputs);

    /// <summary>
    /// Forward without gradients for a value that dies within the pass: modules that write their own result
    /// may write it into a buffer kept from the previous call (<see cref="CompileOptions.ReuseBuffers"/>).
    /// </summary>
    public virtual Tensor Forward(IReadOnlyList<Tensor> inputs, KeptBuffers kept) => Forward(inputs);

    public virtual bool IsStateful => false;

    /// <summary>The state before the first step, for a batch of the given size.</summary>
    public virtual Tensor[] InitialState(long batch) => [];

    /// <summary>One step: inputs [batch, 1, features]; returns the output [batch, 1, features'] and the next state.</summary>
    public virtual (Tensor Output, Tensor[] State) Step(IReadOnlyList<Tensor> inputs, Tensor[] state) => (Forward(inputs), state);

    /// <summary>The node with its weights replaced by this module's current values.</summary>
    public virtual Node ReadBack(Node node) => node;
}

/// <summary>Weights between the IR's float64 tensors and TorchSharp, and activations as tensor operations.</summary>
internal static class TensorValues
{
    /// <summary>The activations' constants as Scalars held for the life of the process (see <see cref="HeldScalars"/>).</summary>
    private static class Held
    {
        public static readonly Scalar Two = 2.0.ToScalar(), Half = 0.5.ToScalar(), FiveTwentyFourths = (5.0 / 24).ToScalar(),
            SeriesBelow = ScalarFunctions.LogSoftplusSeriesBelow.ToScalar(), SlopeFloor = (1 / DecayNormaliserSlopeBound).ToScalar();
    }

    public static Tensor ToTorch(DoubleTensor values, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return torch.tensor(values.Data.ToArray(), values.Shape.Select(d => (long)d).ToArray(), dtype: ScalarType.Float64).to_type(dtype)
            .MoveToOuterDisposeScope();
    }

    public static DoubleTensor ToValues(Tensor tensor)
    {
        using var scope = NewDisposeScope();
        var data = tensor.detach().cpu().to_type(ScalarType.Float64).contiguous().data<double>().ToArray();
        return new DoubleTensor(tensor.shape.Select(d => (int)d).ToArray(), data);
    }

    public static Parameter Parameter(DoubleTensor values, ScalarType dtype) => new(ToTorch(values, dtype), requires_grad: true);

    public static Tensor Apply(ActivationKind kind, Tensor x) => kind switch
    {
        ActivationKind.Identity => x,
        ActivationKind.Sigmoid => x.sigmoid(),
        ActivationKind.SiLU => nn.functional.silu(x),
        ActivationKind.GELU => nn.functional.gelu(x),
        ActivationKind.Tanh => x.tanh(),
        ActivationKind.ReLU => x.relu(),
        // relu(x) + e^min(x, 0): x + 1 above 0 and e^x below, exactly; elu(x) + 1 forms e^x - 1 + 1, which keeps e^x only
        // to 1e-16 absolute (at x = -20 its relative error is 1e-7)
        ActivationKind.EluPlusOne => x.relu().add(x.clamp_max(HeldScalars.Zero).exp(), HeldScalars.One),
        // torch's softplus returns x itself beyond a threshold (20), an error of e^-20 = 2e-9: the exact form instead,
        // softplus(x) = -log sigmoid(-x) = max(x, 0) + log(1 + e^-|x|), which log sigmoid computes in one pass
        ActivationKind.Softplus => nn.functional.logsigmoid(x.neg()).neg(),
        ActivationKind.DecayNormaliser => DecayNormaliser(x),
        ActivationKind.LogSigmoid => nn.functional.logsigmoid(x),
        ActivationKind.LogSoftplus => LogSoftplus(x),
        ActivationKind.Exp => x.exp(),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "bug in the compiler: activation without a module"),
    };

    /// <summary>The largest magnitude of the decay normaliser's slope that its backward passes on.</summary>
    internal const double DecayNormaliserSlopeBound = 1000;

    /// <summary>
    /// sqrt(1 - e^(2x)), whose slope -e^(2x) / sqrt(1 - e^(2x)) is infinite at x = 0 (a decay of exactly 1, as when
    /// Griffin's recurrence gate is 0): autograd would then multiply infinity by the zero slope of that gate and give NaN.
    /// With gradients the backward takes the slope with its magnitude bounded at <see cref="DecayNormaliserSlopeBound"/>
    /// (as Griffin's implementation bounds it; it differs only where 1 - e^(2x) &lt; 1e-6); the value is exact.
    /// </summary>
    private static Tensor DecayNormaliser(Tensor x)
    {
        var recorded = is_grad_enabled() && x.requires_grad;
        using var scope = NewDisposeScope();
        Tensor value, slope;
        using (no_grad())
        {
            var doubled = x.mul(Held.Two);
            value = doubled.expm1().neg().sqrt();
            if (!recorded) return value.MoveToOuterDisposeScope();
            slope = doubled.exp().neg() / value.clamp_min(Held.SlopeFloor);
        }
        // value + slope (x - x): the value itself, and slope as the derivative (x - x is 0 also at x = -inf, a decay of 0)
        return value.add(slope * (x - x.detach()).nan_to_num(0, 0, 0), HeldScalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// log softplus(x) = log(-logsigmoid(-x)) from x = -20 up; below, x + log(log(1 + u) / u) = x - u/2 + 5 u^2 / 24 -
    /// O(u^3) with u = e^x (u^3 / 8 &lt; 1e-27 there). Each form reads x clamped to its own side, so the form not taken
    /// stays finite and gives zero, not NaN, to the gradient.
    /// </summary>
    private static Tensor LogSoftplus(Tensor x)
    {
        using var scope = NewDisposeScope();
        var below = x.lt(Held.SeriesBelow);
        var low = x.clamp_max(Held.SeriesBelow);
        var u = low.exp();
        // low - u (1/2 - u 5/24), as written (the negated product plus 1/2 is 1/2 minus it exactly)
        var series = low - u * u.mul(Held.FiveTwentyFourths).neg_().add_(Held.Half, HeldScalars.One);
        var logarithm = nn.functional.logsigmoid(x.clamp_min(Held.SeriesBelow).neg()).neg().log();
        return torch.where(below, series, logarithm).MoveToOuterDisposeScope();
    }
}
