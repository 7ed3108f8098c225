using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// value * activation(gate): on the CPU in float32 and float64, outside TorchOps, for the activations the fused kernels
/// compute, one pass forward and one backward (<see cref="Kernels.GateFunction"/>); the composite form otherwise.
/// </summary>
internal sealed class GateModule(Gate node, ExecutionMode execution) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var (value, gate) = (inputs[0], inputs[1]);
        if (execution != ExecutionMode.TorchOps && value.device.type == DeviceType.CPU && value.dtype is ScalarType.Float32 or ScalarType.Float64
            && gate.dtype == value.dtype && gate.device.type == DeviceType.CPU && value.shape.SequenceEqual(gate.shape)
            && Kernels.GatedScan.Supports(node.Activation))
            return Kernels.GateFunction.Run(value, gate, node.Activation);
        return value * TensorValues.Apply(node.Activation, gate);
    }
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
    protected override NodeModule Module(Gate node, ScalarType dtype, ExecutionMode execution) => new GateModule(node, execution);

    protected override Stepper<T> Stepper<T>(Gate node, Stepper<T>[] sources, int batch, int capacity) =>
        new GateStepper<T>(node, sources[0], sources[1], batch);
}
