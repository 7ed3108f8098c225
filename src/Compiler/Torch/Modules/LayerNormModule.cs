using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>(x - mean) / sqrt(var + eps) * g + b over the last axis; x: [batch, time, width].</summary>
internal sealed class LayerNormModule : NodeModule
{
    private readonly ExecutionMode execution;
    private readonly double epsilon;
    private readonly Parameter? gain, bias;

    public LayerNormModule(LayerNorm node, ScalarType dtype, ExecutionMode execution) : base(node.Name)
    {
        this.execution = execution;
        epsilon = node.Epsilon;
        if (node.Weights is { } w)
        {
            register_parameter("gain", gain = TensorValues.Parameter(w.Gain, dtype));
            register_parameter("bias", bias = TensorValues.Parameter(w.Bias!, dtype));
        }
    }

    public override Tensor Forward(IReadOnlyList<Tensor> inputs) =>
        Normalisation.Apply(inputs[0], gain, bias, groups: 1, centre: true, epsilon, execution);

    public override Node ReadBack(Node node) =>
        gain is null ? node : ((LayerNorm)node) with { Weights = new NormWeights(TensorValues.ToValues(gain), TensorValues.ToValues(bias!)) };
}

internal sealed class LayerNormExecution : NodeExecution<LayerNorm>
{
    protected override NodeModule Module(LayerNorm node, ScalarType dtype, ExecutionMode execution) => new LayerNormModule(node, dtype, execution);

    protected override Stepper<T> Stepper<T>(LayerNorm node, Stepper<T>[] sources, int batch, int capacity) =>
        new NormStepper<T>(sources[0], batch, node.Epsilon, centre: true, node.Weights?.Gain, node.Weights?.Bias);
}
