using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>Concatenation along features (the last axis); one part is returned as an alias.</summary>
internal sealed class ConcatModule(Concat node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs.Count == 1 ? inputs[0].alias() : torch.cat(inputs.ToList(), -1);
}

internal sealed class ConcatStepper<T>(Stepper<T>[] parts, int batch) : Stepper<T>(batch, parts.Sum(p => p.Width))
    where T : unmanaged, INumber<T>
{
    public override void Step()
    {
        for (int b = 0; b < Batch; b++)
        {
            var row = Row(b);
            foreach (var part in parts)
            {
                part.Row(b).CopyTo(row);
                row = row.Slice(part.Width);
            }
        }
    }
}

internal sealed class ConcatExecution : NodeExecution<Concat>
{
    protected override NodeModule Module(Concat node, ScalarType dtype, ExecutionMode execution) => new ConcatModule(node);

    protected override Stepper<T> Stepper<T>(Concat node, Stepper<T>[] sources, int batch, int capacity) =>
        new ConcatStepper<T>(sources, batch);

    protected override bool ReturnsView(Concat node) => node.Parts.Count == 1;
}
