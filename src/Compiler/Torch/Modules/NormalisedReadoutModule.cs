using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using Duality.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>y = value / max(|normaliser|, 1) per head; value: [batch, time, heads*d_v], normaliser: [batch, time, heads].</summary>
internal sealed class NormalisedReadoutModule(NormalisedReadout node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var (value, normaliser) = (inputs[0], inputs[1]);
        long batch = value.shape[0], time = value.shape[1], width = value.shape[2];
        var divisor = normaliser.abs().clamp_min(HeldScalars.One).unsqueeze(-1);
        return (value.reshape(batch, time, node.Heads, width / node.Heads) / divisor).reshape(batch, time, width);
    }
}

internal sealed class NormalisedReadoutStepper<T>(NormalisedReadout node, Stepper<T> value, Stepper<T> normaliser, int batch)
    : Stepper<T>(batch, value.Width) where T : unmanaged, IFloatingPointIeee754<T>
{
    public override void Step()
    {
        var channels = Width / node.Heads;
        for (int b = 0; b < Batch; b++)
        {
            Span<T> y = Row(b), v = value.Row(b), n = normaliser.Row(b);
            for (int c = 0; c < y.Length; c++) y[c] = v[c] / T.Max(T.Abs(n[c / channels]), T.One);
        }
    }
}

internal sealed class NormalisedReadoutExecution : NodeExecution<NormalisedReadout>
{
    protected override NodeModule Module(NormalisedReadout node, ScalarType dtype, ExecutionMode execution) => new NormalisedReadoutModule(node);

    protected override Stepper<T> Stepper<T>(NormalisedReadout node, Stepper<T>[] sources, int batch, int capacity) =>
        new NormalisedReadoutStepper<T>(node, sources[0], sources[1], batch);
}
