using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>x / sqrt(mean(x^2) + eps) * g over the last axis; x: [batch, time, width].</summary>
internal sealed class RmsNormModule : NodeModule
{
    private readonly ExecutionMode execution;
    private readonly double epsilon;
    private readonly Parameter? gain;

    public RmsNormModule(RmsNorm node, ScalarType dtype, ExecutionMode execution) : base(node.Name)
    {
        this.execution = execution;
        epsilon = node.Epsilon;
        if (node.Weights is { } w) register_parameter("gain", gain = TensorValues.Parameter(w.Gain, dtype));
    }

    public override Tensor Forward(IReadOnlyList<Tensor> inputs) =>
        Normalisation.Apply(inputs[0], gain, null, groups: 1, centre: false, epsilon, execution);

    public override Node ReadBack(Node node) =>
        gain is null ? node : ((RmsNorm)node) with { Weights = new NormWeights(TensorValues.ToValues(gain), null) };
}

internal sealed class RmsNormExecution : NodeExecution<RmsNorm>
{
    protected override NodeModule Module(RmsNorm node, ScalarType dtype, ExecutionMode execution) => new RmsNormModule(node, dtype, execution);

    protected override Stepper<T> Stepper<T>(RmsNorm node, Stepper<T>[] sources, int batch, int capacity) =>
        new NormStepper<T>(sources[0], batch, node.Epsilon, centre: false, node.Weights?.Gain, null);
}
