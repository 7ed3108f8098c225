using Duality.Ir;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>value * activation(gate).</summary>
internal sealed class GateModule(Gate node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0] * TensorValues.Apply(node.Activation, inputs[1]);
}

internal sealed class ActivationModule(Activation node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => TensorValues.Apply(node.Kind, inputs[0]);
}

internal sealed class AddModule(Add node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0] + inputs[1];
}

/// <summary>Concatenation along features (the last axis).</summary>
internal sealed class ConcatModule(Concat node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs.Count == 1 ? inputs[0].alias() : torch.cat(inputs.ToList(), -1);
}

internal sealed class SliceModule(Slice node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0].narrow(-1, node.Start, node.Length);
}

internal sealed class ScaleModule(Scale node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0] * node.Factor;
}
