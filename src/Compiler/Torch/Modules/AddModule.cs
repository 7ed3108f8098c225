using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using Duality.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

internal sealed class AddModule(Add node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0].Plus(inputs[1]);
}

internal sealed class AddStepper<T>(Stepper<T> left, Stepper<T> right, int batch) : Stepper<T>(batch, left.Width)
    where T : unmanaged, IFloatingPointIeee754<T>
{
    public override void Step()
    {
        Span<T> y = Output, a = left.Output, b = right.Output;
        for (int i = 0; i < y.Length; i++) y[i] = a[i] + b[i];
    }
}

internal sealed class AddExecution : NodeExecution<Add>
{
    protected override NodeModule Module(Add node, ScalarType dtype, ExecutionMode execution) => new AddModule(node);

    protected override Stepper<T> Stepper<T>(Add node, Stepper<T>[] sources, int batch, int capacity) =>
        new AddStepper<T>(sources[0], sources[1], batch);
}
