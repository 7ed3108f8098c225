using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>x[..., Start : Start + Length], a view of the input.</summary>
internal sealed class SliceModule(Slice node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0].narrow(-1, node.Start, node.Length);
}

internal sealed class SliceStepper<T>(Slice node, Stepper<T> source, int batch) : Stepper<T>(batch, node.Length)
    where T : unmanaged, INumber<T>
{
    public override void Step()
    {
        for (int b = 0; b < Batch; b++) source.Row(b).Slice(node.Start, node.Length).CopyTo(Row(b));
    }
}

internal sealed class SliceExecution : NodeExecution<Slice>
{
    protected override NodeModule Module(Slice node, ScalarType dtype, ExecutionMode execution) => new SliceModule(node);

    protected override Stepper<T> Stepper<T>(Slice node, Stepper<T>[] sources, int batch, int capacity) =>
        new SliceStepper<T>(node, sources[0], batch);

    protected override bool ReturnsView(Slice node) => true;
}
