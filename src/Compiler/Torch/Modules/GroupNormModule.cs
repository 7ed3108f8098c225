using Duality.Ir;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>Each group of width / groups features normalised (centred or RMS), then g and b; x: [batch, time, width].</summary>
internal sealed class GroupNormModule : NodeModule
{
    private readonly ExecutionMode execution;
    private readonly GroupNorm node;
    private readonly Parameter? gain, bias;

    public GroupNormModule(GroupNorm node, ScalarType dtype, ExecutionMode execution) : base(node.Name)
    {
        this.execution = execution;
        this.node = node;
        if (node.Weights is { } w)
        {
            register_parameter("gain", gain = TensorValues.Parameter(w.Gain, dtype));
            if (w.Bias is { } b) register_parameter("bias", bias = TensorValues.Parameter(b, dtype));
        }
    }

    public override Tensor Forward(IReadOnlyList<Tensor> inputs) =>
        Normalisation.Apply(inputs[0], gain, bias, node.Groups, node.Centre, node.Epsilon, execution);

    public override Node ReadBack(Node read) =>
        gain is null ? read : ((GroupNorm)read) with { Weights = new NormWeights(TensorValues.ToValues(gain), bias is null ? null : TensorValues.ToValues(bias)) };
}

internal sealed class GroupNormExecution : NodeExecution<GroupNorm>
{
    protected override NodeModule Module(GroupNorm node, ScalarType dtype, ExecutionMode execution) => new GroupNormModule(node, dtype, execution);

    protected override Stepper<T> Stepper<T>(GroupNorm node, Stepper<T>[] sources, int batch, int capacity) =>
        new NormStepper<T>(sources[0], batch, node.Epsilon, node.Centre, node.Weights?.Gain, node.Weights?.Bias, node.Groups);
}
