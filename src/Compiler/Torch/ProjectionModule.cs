using Duality.Ir;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>y = x W^T + b; x: [batch, time, in], W: [out, in].</summary>
internal sealed class ProjectionModule : NodeModule
{
    private readonly Parameter weight;
    private readonly Parameter? bias;

    public ProjectionModule(Projection node, ScalarType dtype) : base(node.Name)
    {
        weight = Convert.Parameter(node.Weights!.Weight, dtype);
        register_parameter("weight", weight);
        if (node.Weights.Bias is { } b)
        {
            bias = Convert.Parameter(b, dtype);
            register_parameter("bias", bias);
        }
    }

    public Tensor Weight => weight;

    public Tensor? BiasWeight => bias;

    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => nn.functional.linear(inputs[0], weight, bias);

    public override Node ReadBack(Node node) =>
        ((Projection)node) with { Weights = new ProjectionWeights(Convert.ToValues(weight), bias is null ? null : Convert.ToValues(bias)) };
}
