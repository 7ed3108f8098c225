using Duality.Kernels;
using Duality.Execution;
using Duality.Ir;
using static Duality.Streaming.VectorMath;
using Duality.Streaming;
using System.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// h_t = lambda * h_{t-1} + u_t, diagonal; u: [batch, time, width]. A complex state is kept as
/// (re, im): re' = l_re re - l_im im + u, im' = l_re im + l_im re. With a decay branch
/// d: [batch, time, 1 | width], lambda_t = sigmoid(d_t). Lambda is a parameter when trainable,
/// a buffer when fixed; the initial state is a buffer.
/// </summary>
internal sealed class RecurrenceModule : NodeModule
{
    private readonly LinearRecurrence node;
    private readonly Tensor? lambda;
    private readonly Tensor? initialState;

    private readonly ExecutionMode execution;

    public RecurrenceModule(LinearRecurrence node, ScalarType dtype, ExecutionMode execution) : base(node.Name)
    {
        this.node = node;
        this.execution = execution;
        if (node.Lambda is { } values)
        {
            if (node.TrainableLambda) register_parameter("lambda", (Parameter)(lambda = TensorValues.Parameter(values, dtype)));
            else register_buffer("lambda", lambda = TensorValues.ToTorch(values, dtype));
        }
        if (node.InitialState is { } h0) register_buffer("initial_state", initialState = TensorValues.ToTorch(h0, dtype));
    }

    private bool Complex => node.State == StateKind.Complex;

    /// <summary>The eigenvalues ([width] or [width, 2]), or null with a decay branch.</summary>
    public Tensor? Lambda => lambda;

    /// <summary>The initial state ([width] or [width, 2]), or null for zero.</summary>
    public Tensor? InitialStateBuffer => initialState;

    public override bool IsStateful => true;

    public override Tensor[] InitialState(long batch)
    {
        var options = lambda ?? initialState;
        var dtype = options?.dtype ?? ScalarType.Float32;
        var device = options?.device ?? CPU;
        if (initialState is null)
            return Complex
                ? [zeros(batch, node.Width, dtype: dtype, device: device), zeros(batch, node.Width, dtype: dtype, device: device)]
                : [zeros(batch, node.Width, dtype: dtype, device: device)];
        return Complex
            ? [initialState.select(1, 0).expand(batch, node.Width), initialState.select(1, 1).expand(batch, node.Width)]
            : [initialState.expand(batch, node.Width)];
    }

    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        if (execution != ExecutionMode.TorchOps && inputs[0].device.type == DeviceType.CPU) return Fused(inputs);
        inputs = Prepared(inputs);
        var u = inputs[0];
        if (u.shape[1] == 0)
        {
            // no steps: an empty output [batch, 0, width'] (a stack of no steps is an error)
            var none = u.narrow(-1, 0, node.Width).clone();
            return Readout(Complex ? [none, none] : [none]);
        }
        var state = Align(InitialState(u.shape[0]), u);
        var steps = new Tensor[u.shape[1]];
        for (int t = 0; t < steps.Length; t++)
        {
            state = Advance(state, u.select(1, t), inputs.Count > 1 ? inputs[1].select(1, t) : null);
            steps[t] = Readout(state);
        }
        return stack(steps, 1);
    }

    /// <summary>A real scan on the CPU writes its states into a kept buffer.</summary>
    public override Tensor Forward(IReadOnlyList<Tensor> inputs, KeptBuffers kept)
    {
        var u = inputs[0];
        if (execution == ExecutionMode.TorchOps || u.device.type != DeviceType.CPU || Complex) return Forward(inputs);
        var states = kept.Take(0, u.shape, u.dtype, u.device);
        return Fused(inputs, states).alias();
    }

    /// <summary>
    /// The fused scan kernels (<see cref="Kernels.LinearScan"/>, <see cref="Kernels.ComplexScan"/>); a complex state's
    /// input, real or complex, and its normalisation run in the scan's one pass.
    /// </summary>
    private Tensor Fused(IReadOnlyList<Tensor> inputs, Tensor? into = null)
    {
        if (Complex)
        {
            var both = Kernels.ComplexScan.Run(inputs[0], lambda!, initialState, node.NormalisedInput ? Gain() : null, node.ComplexInput);
            return node.Readout == ComplexReadout.RealAndImaginary ? both : both.narrow(-1, 0, node.Width);
        }
        inputs = Prepared(inputs);
        var u = inputs[0];
        return inputs.Count > 1 ? Kernels.LinearScan.Run(u, DecayOf(inputs[1]), initialState, into) : Kernels.LinearScan.Run(u, lambda!, initialState, into);
    }

    /// <summary>The inputs with u scaled by sqrt(1 - |lambda|^2) per neuron (both halves of a complex input) when the input is normalised.</summary>
    private IReadOnlyList<Tensor> Prepared(IReadOnlyList<Tensor> inputs)
    {
        if (!node.NormalisedInput) return inputs;
        var gain = Gain();
        if (node.ComplexInput) gain = cat([gain, gain]);
        return [inputs[0] * gain, .. inputs.Skip(1)];
    }

    /// <summary>sqrt(1 - |lambda|^2) per neuron ([width]).</summary>
    private Tensor Gain() => (Complex ? lambda!.Squared().sum([1L]) : lambda!.Squared()).neg().add_(HeldScalars.One, HeldScalars.One).sqrt();

    public override (Tensor Output, Tensor[] State) Step(IReadOnlyList<Tensor> inputs, Tensor[] state)
    {
        inputs = Prepared(inputs);
        var u = inputs[0];
        var next = Advance(Align(state, u), u.select(1, 0), inputs.Count > 1 ? inputs[1].select(1, 0) : null);
        return (Readout(next).unsqueeze(1), next);
    }

    public override Node ReadBack(Node node) =>
        this.node.TrainableLambda && lambda is not null ? ((LinearRecurrence)node) with { Lambda = TensorValues.ToValues(lambda) } : node;

    private static Tensor[] Align(Tensor[] state, Tensor like) =>
        state.Select(s => s.dtype == like.dtype && s.device == like.device ? s : s.to(like.dtype, like.device)).ToArray();

    /// <summary>One step of the recurrence; its sums take their alpha from <see cref="HeldScalars.One"/> (this runs once per
    /// step, and each <c>a + b</c> would make a Scalar only a finaliser frees).</summary>
    private Tensor[] Advance(Tensor[] state, Tensor u, Tensor? decay)
    {
        var one = HeldScalars.One;
        if (decay is not null) return [(DecayOf(decay) * state[0]).add(u, one)];
        if (!Complex) return [(lambda! * state[0]).add(u, one)];
        Tensor re = state[0], im = state[1], lre = lambda!.select(1, 0), lim = lambda.select(1, 1);
        if (!node.ComplexInput) return [(lre * re).sub(lim * im).add(u, one), (lre * im).add(lim * re, one)];
        int n = node.Width;
        return [(lre * re).sub(lim * im).add(u.narrow(-1, 0, n), one), (lre * im).add(lim * re, one).add(u.narrow(-1, n, n), one)];
    }

    /// <summary>lambda_t from the decay branch: sigmoid(d) or e^d (<see cref="DecayForm"/>).</summary>
    private Tensor DecayOf(Tensor decay) => node.DecayForm == DecayForm.Logarithm ? decay.exp() : decay.sigmoid();

    private Tensor Readout(Tensor[] state) =>
        Complex && node.Readout == ComplexReadout.RealAndImaginary ? cat([state[0], state[1]], -1) : state[0];
}

/// <summary>h = lambda h + u, real or complex (kept as re, im), or h = sigmoid(d) h + u with a decay branch.</summary>
internal sealed class RecurrenceStepper<T> : Stepper<T> where T : unmanaged, INumber<T>
{
    private readonly LinearRecurrence node;
    private readonly Stepper<T> source;
    private readonly Stepper<T>? decay;
    private readonly T[] lambdaRe, lambdaIm, initialRe, initialIm, gain, re, im;

    public RecurrenceStepper(LinearRecurrence node, Stepper<T> source, Stepper<T>? decay, int batch) : base(batch, node.OutputWidth)
    {
        (this.node, this.source, this.decay) = (node, source, decay);
        int n = node.Width;
        var complex = node.State == StateKind.Complex;
        (lambdaRe, lambdaIm) = (new T[n], new T[n]);
        (initialRe, initialIm) = (new T[n], new T[n]);
        gain = new T[n];
        for (int k = 0; k < n; k++)
        {
            gain[k] = node.NormalisedInput ? T.CreateChecked(node.InputGain(k)) : T.One;
            if (node.Lambda is { } l) (lambdaRe[k], lambdaIm[k]) = complex ? (T.CreateChecked(l[k, 0]), T.CreateChecked(l[k, 1])) : (T.CreateChecked(l[k]), T.Zero);
            if (node.InitialState is { } h0) (initialRe[k], initialIm[k]) = complex ? (T.CreateChecked(h0[k, 0]), T.CreateChecked(h0[k, 1])) : (T.CreateChecked(h0[k]), T.Zero);
        }
        (re, im) = (new T[batch * n], new T[batch * n]);
        Reset();
    }

    public override void Reset()
    {
        for (int b = 0; b < Batch; b++)
        {
            initialRe.CopyTo(re, b * node.Width);
            initialIm.CopyTo(im, b * node.Width);
        }
    }

    public override void Step()
    {
        int n = node.Width;
        var complex = node.State == StateKind.Complex;
        for (int b = 0; b < Batch; b++)
        {
            var u = source.Row(b);
            var hr = re.AsSpan(b * n, n);
            var hi = im.AsSpan(b * n, n);
            if (decay is not null)
            {
                var d = decay.Row(b);
                for (int k = 0; k < n; k++) hr[k] = T.CreateChecked(node.DecayOf(double.CreateChecked(d[d.Length == 1 ? 0 : k]))) * hr[k] + u[k];
            }
            else if (!complex)
                for (int k = 0; k < n; k++) hr[k] = lambdaRe[k] * hr[k] + gain[k] * u[k];
            else
                for (int k = 0; k < n; k++)
                {
                    var imaginary = node.ComplexInput ? gain[k] * u[n + k] : T.Zero;
                    (hr[k], hi[k]) = (lambdaRe[k] * hr[k] - lambdaIm[k] * hi[k] + gain[k] * u[k], lambdaRe[k] * hi[k] + lambdaIm[k] * hr[k] + imaginary);
                }
            var y = Row(b);
            hr.CopyTo(y);
            if (node.OutputWidth == 2 * n) hi.CopyTo(y.Slice(n));
        }
    }
}

internal sealed class RecurrenceExecution : NodeExecution<LinearRecurrence>
{
    protected override NodeModule Module(LinearRecurrence node, ScalarType dtype, ExecutionMode execution) => new RecurrenceModule(node, dtype, execution);

    protected override Stepper<T> Stepper<T>(LinearRecurrence node, Stepper<T>[] sources, int batch, int capacity) =>
        new RecurrenceStepper<T>(node, sources[0], node.Decay is null ? null : sources[1], batch);
}
