using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>value * activation(gate).</summary>
internal sealed class GateModule(Gate node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0] * TensorValues.Apply(node.Activation, inputs[1]);
}

internal sealed class GateStepper<T>(Gate node, Stepper<T> value, Stepper<T> gate, int batch) : Stepper<T>(batch, value.Width)
    where T : unmanaged, IFloatingPointIeee754<T>
{
    public override void Step()
    {
        Span<T> y = Output, v = value.Output, g = gate.Output;
        for (int i = 0; i < y.Length; i++) y[i] = v[i] * VectorMath.Apply(node.Activation, g[i]);
    }
}

internal sealed class GateExecution : NodeExecution<Gate>
{
    protected override NodeModule Module(Gate node, ScalarType dtype, ExecutionMode execution) => new GateModule(node);

    protected override Stepper<T> Stepper<T>(Gate node, Stepper<T>[] sources, int batch, int capacity) =>
        new GateStepper<T>(node, sources[0], sources[1], batch);
}
