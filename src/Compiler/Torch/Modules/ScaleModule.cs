using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using Duality.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

internal sealed class ScaleModule(Scale node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0].Times(node.Factor);
}

internal sealed class ScaleStepper<T>(Scale node, Stepper<T> source, int batch) : Stepper<T>(batch, source.Width)
    where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly T factor = T.CreateChecked(node.Factor);

    public override void Step()
    {
        Span<T> y = Output, x = source.Output;
        for (int i = 0; i < y.Length; i++) y[i] = factor * x[i];
    }
}

internal sealed class ScaleExecution : NodeExecution<Scale>
{
    protected override NodeModule Module(Scale node, ScalarType dtype, ExecutionMode execution) => new ScaleModule(node);

    protected override Stepper<T> Stepper<T>(Scale node, Stepper<T>[] sources, int batch, int capacity) =>
        new ScaleStepper<T>(node, sources[0], batch);
}
