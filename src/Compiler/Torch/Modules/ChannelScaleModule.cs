using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>y = s * x per channel; x: [batch, time, width], s: [width].</summary>
internal sealed class ChannelScaleModule : NodeModule
{
    private readonly Parameter factors;

    public ChannelScaleModule(ChannelScale node, ScalarType dtype) : base(node.Name) =>
        register_parameter("factors", factors = TensorValues.Parameter(node.Factors!, dtype));

    /// <summary>s, for a group that applies the scale itself.</summary>
    internal Tensor Factors => factors;

    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0] * factors;

    public override Node ReadBack(Node node) => ((ChannelScale)node) with { Factors = TensorValues.ToValues(factors) };
}

internal sealed class ChannelScaleStepper<T> : Stepper<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Stepper<T> source;
    private readonly T[] factors;

    public ChannelScaleStepper(ChannelScale node, Stepper<T> source, int batch) : base(batch, node.Width)
    {
        this.source = source;
        factors = node.Factors!.Data.Select(T.CreateChecked).ToArray();
    }

    public override void Step()
    {
        for (int b = 0; b < Batch; b++)
        {
            Span<T> y = Row(b), x = source.Row(b);
            for (int c = 0; c < y.Length; c++) y[c] = factors[c] * x[c];
        }
    }
}

internal sealed class ChannelScaleExecution : NodeExecution<ChannelScale>
{
    protected override NodeModule Module(ChannelScale node, ScalarType dtype, ExecutionMode execution) => new ChannelScaleModule(node, dtype);

    protected override Stepper<T> Stepper<T>(ChannelScale node, Stepper<T>[] sources, int batch, int capacity) =>
        new ChannelScaleStepper<T>(node, sources[0], batch);
}
