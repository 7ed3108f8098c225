using System.Numerics;
using Duality.Ir;
using Duality.Kernels;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// y_t = b + sum_{i &lt; K} w[:, i] * x_{t-i}, per channel; x: [batch, time, width], w: [width, K]. TorchOps runs
/// TorchSharp's grouped conv1d over the input padded with K-1 zero steps on the left; on the CPU otherwise, the fused
/// loop with its reverse pass (<see cref="CausalConvolutionFunction"/>). Step form: the state is the last K-1 inputs
/// [batch, K-1, width], oldest first.
/// </summary>
internal sealed class CausalConv1dModule : NodeModule
{
    private readonly CausalConv1d node;
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private readonly ExecutionMode execution;

    public CausalConv1dModule(CausalConv1d node, ScalarType dtype, ExecutionMode execution) : base(node.Name)
    {
        (this.node, this.execution) = (node, execution);
        register_parameter("weight", weight = TensorValues.Parameter(node.Weights!.Weight, dtype));
        if (node.Weights.Bias is { } b) register_parameter("bias", bias = TensorValues.Parameter(b, dtype));
    }

    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        if (execution != ExecutionMode.TorchOps && x.device.type == DeviceType.CPU) return CausalConvolutionFunction.Run(x, weight, bias);
        // no steps: an empty output (conv1d refuses an input shorter than its kernel)
        if (x.shape[1] == 0) return x.clone();
        // conv1d correlates: output t reads padded steps t .. t+K-1, i.e. x_{t-K+1} .. x_t, so the taps go in reverse
        var padded = nn.functional.pad(x.transpose(1, 2), [node.KernelSize - 1, 0]);
        var kernel = weight.flip(1).unsqueeze(1);
        return nn.functional.conv1d(padded, kernel, bias, groups: node.Width).transpose(1, 2);
    }

    public override bool IsStateful => node.KernelSize > 1;

    public override Tensor[] InitialState(long batch) =>
        [zeros([batch, node.KernelSize - 1, node.Width], dtype: weight.dtype, device: weight.device)];

    public override (Tensor Output, Tensor[] State) Step(IReadOnlyList<Tensor> inputs, Tensor[] state)
    {
        var x = inputs[0];
        var window = cat([state[0].to(x.dtype, x.device), x], 1);
        // window: x_{t-K+1} .. x_t; the taps reversed weigh them
        var y = (window * weight.flip(1).t().unsqueeze(0)).sum(1, keepdim: true);
        if (bias is not null) y = y.Plus(bias);
        return (y, [window.narrow(1, 1, node.KernelSize - 1)]);
    }

    public override Node ReadBack(Node n) =>
        ((CausalConv1d)n) with { Weights = new ConvolutionWeights(TensorValues.ToValues(weight), bias is null ? null : TensorValues.ToValues(bias)) };
}

/// <summary>The convolution one token at a time: a ring of the last K-1 inputs per batch row.</summary>
internal sealed class CausalConv1dStepper<T> : Stepper<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Stepper<T> source;
    private readonly T[] taps, bias, history;
    private readonly int kernel;
    private int newest;

    public CausalConv1dStepper(CausalConv1d node, Stepper<T> source, int batch) : base(batch, node.Width)
    {
        (this.source, kernel) = (source, node.KernelSize);
        var w = node.Weights!;
        taps = new T[kernel * Width];
        for (int i = 0; i < kernel; i++)
            for (int c = 0; c < Width; c++) taps[i * Width + c] = T.CreateChecked(w.Weight[c, i]);
        bias = w.Bias is { } b ? [.. b.Data.Select(T.CreateChecked)] : new T[Width];
        history = new T[batch * Math.Max(kernel - 1, 1) * Width];
    }

    public override void Reset()
    {
        Array.Clear(history);
        newest = 0;
    }

    public override void Step()
    {
        int lags = kernel - 1;
        for (int b = 0; b < Batch; b++)
        {
            Span<T> x = source.Row(b), y = Row(b);
            for (int c = 0; c < Width; c++) y[c] = bias[c] + taps[c] * x[c];
            // history slot (newest - i + 1) holds x_{t-i} for i >= 1
            for (int i = 1; i <= lags; i++)
            {
                var past = history.AsSpan((b * lags + (newest - i + 1 + lags) % lags) * Width, Width);
                var tap = taps.AsSpan(i * Width, Width);
                for (int c = 0; c < Width; c++) y[c] += tap[c] * past[c];
            }
        }
        if (lags == 0) return;
        newest = (newest + 1) % lags;
        for (int b = 0; b < Batch; b++) source.Row(b).CopyTo(history.AsSpan((b * lags + newest) * Width, Width));
    }
}

internal sealed class CausalConv1dExecution : NodeExecution<CausalConv1d>
{
    protected override NodeModule Module(CausalConv1d node, ScalarType dtype, ExecutionMode execution) => new CausalConv1dModule(node, dtype, execution);

    protected override Stepper<T> Stepper<T>(CausalConv1d node, Stepper<T>[] sources, int batch, int capacity) =>
        new CausalConv1dStepper<T>(node, sources[0], batch);
}
