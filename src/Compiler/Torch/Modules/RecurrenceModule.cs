using Duality.Execution;
using Duality.Ir;
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
        var u = inputs[0];
        if (execution != ExecutionMode.TorchOps && u.device.type == DeviceType.CPU) return Fused(inputs);
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

    /// <summary>The fused scan kernels (<see cref="Kernels.LinearScan"/>, <see cref="Kernels.ComplexScan"/>).</summary>
    private Tensor Fused(IReadOnlyList<Tensor> inputs, Tensor? into = null)
    {
        var u = inputs[0];
        if (inputs.Count > 1) return Kernels.LinearScan.Run(u, inputs[1].sigmoid(), initialState, into);
        if (!Complex) return Kernels.LinearScan.Run(u, lambda!, initialState, into);
        var both = Kernels.ComplexScan.Run(u, lambda!, initialState);
        return node.Readout == ComplexReadout.RealAndImaginary ? both : both.narrow(-1, 0, node.Width);
    }

    public override (Tensor Output, Tensor[] State) Step(IReadOnlyList<Tensor> inputs, Tensor[] state)
    {
        var u = inputs[0];
        var next = Advance(Align(state, u), u.select(1, 0), inputs.Count > 1 ? inputs[1].select(1, 0) : null);
        return (Readout(next).unsqueeze(1), next);
    }

    public override Node ReadBack(Node node) =>
        this.node.TrainableLambda && lambda is not null ? ((LinearRecurrence)node) with { Lambda = TensorValues.ToValues(lambda) } : node;

    private static Tensor[] Align(Tensor[] state, Tensor like) =>
        state.Select(s => s.dtype == like.dtype && s.device == like.device ? s : s.to(like.dtype, like.device)).ToArray();

    private Tensor[] Advance(Tensor[] state, Tensor u, Tensor? decay)
    {
        if (decay is not null) return [decay.sigmoid() * state[0] + u];
        if (!Complex) return [lambda! * state[0] + u];
        Tensor re = state[0], im = state[1], lre = lambda!.select(1, 0), lim = lambda.select(1, 1);
        return [lre * re - lim * im + u, lre * im + lim * re];
    }

    private Tensor Readout(Tensor[] state) =>
        Complex && node.Readout == ComplexReadout.RealAndImaginary ? cat([state[0], state[1]], -1) : state[0];
}
