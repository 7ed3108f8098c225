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

    /// <summary>The same product written into a kept buffer: the bias copied in, then x W^T added to it.</summary>
    public override Tensor Forward(IReadOnlyList<Tensor> inputs, KeptBuffers kept)
    {
        var x = inputs[0];
        long rows = x.shape[0] * x.shape[1], features = weight.shape[0];
        var output = kept.Take(0, [x.shape[0], x.shape[1], features], x.dtype, x.device);
        using var matrix = output.view(rows, features);
        if (bias is null) matrix.addmm_(x.reshape(rows, x.shape[2]), weight.t(), beta: 0);
        else matrix.copy_(bias.expand(rows, features)).addmm_(x.reshape(rows, x.shape[2]), weight.t());
        return output.alias();
    }

    public override Node ReadBack(Node node) =>
        ((Projection)node) with { Weights = new ProjectionWeights(Convert.ToValues(weight), bias is null ? null : Convert.ToValues(bias)) };
}
