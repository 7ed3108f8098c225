using Duality.Builders;
using Duality.Ir;

namespace Duality.Ir
{

/// <summary>
/// Causal depthwise convolution over time, each of Width channels with its own KernelSize taps:
///   y_t[c] = b[c] + sum_{i &lt; KernelSize} w[c, i] x_{t-i}[c]      (x_s = 0 for s &lt; 0)
/// so w[c, 0] weighs the current step and w[c, k-1] the step k-1 back (PyTorch's Conv1d weight [C, 1, k] with left
/// padding k-1 holds these taps in reverse order). W: [Width, KernelSize], b: [Width]; initially
/// W, b ~ U(-1/sqrt(KernelSize), 1/sqrt(KernelSize)). The short convolution of Mamba and Griffin blocks.
/// </summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">The node it reads: [batch, time, width].</param>
/// <param name="Width">C, the channels: the width of the input and of the output.</param>
/// <param name="KernelSize">k, the taps per channel, at least 1.</param>
/// <param name="Bias">Whether b is added (default true).</param>
/// <param name="Weights">W and b, or null to have them drawn.</param>
public sealed record CausalConv1d(string Name, NodeId Source, int Width, int KernelSize, bool Bias = true,
    ConvolutionWeights? Weights = null) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() => $"CausalConv1d {Width} (kernel {KernelSize}{(Bias ? "" : ", no bias")})";
    /// <inheritdoc/>
    public override bool HasWeights => Weights is not null;

    /// Weight [Width, KernelSize] (tap i weighs the step i back) and, with Bias, Bias [Width]; both drawn
    /// U(-1/sqrt(KernelSize), 1/sqrt(KernelSize)).
    public override IReadOnlyList<WeightSlot> WeightSlots
    {
        get
        {
            var bound = 1 / Math.Sqrt(Math.Max(KernelSize, 1));
            var draw = new WeightDraw.Uniform(-bound, bound);
            var weight = new WeightSlot("Weight", [Width, KernelSize], draw, Weights?.Weight);
            return Bias ? [weight, new WeightSlot("Bias", [Width], draw, Weights?.Bias)] : [weight];
        }
    }

    internal override Node WithWeights(IReadOnlyDictionary<string, DoubleTensor> values) =>
        this with { Weights = new ConvolutionWeights(values["Weight"], values.GetValueOrDefault("Bias")) };

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        var received = width(Source);
        if (!check.Positive(Width, "width") | !check.Positive(KernelSize, "kernel size")
            || !check.Elements("Weight", Width, KernelSize)) return null;
        check.Input(Source, Width, received, $"declare the convolution with width {received}, or project to {Width} first");
        if (Weights is { } w)
        {
            check.Weight("Weight", w.Weight, Width, KernelSize);
            if (Bias && w.Bias is null)
                check.Problem("missing weight", "the convolution has a bias but its weights carry none", "give a Bias vector, or declare Bias = false");
            else if (!Bias && w.Bias is not null)
                check.Problem("unexpected weight", "the convolution has no bias but its weights carry one", "drop the bias, or declare Bias = true");
            else if (w.Bias is not null) check.Weight("Bias", w.Bias, Width);
        }
        return Width;
    }

    internal override long CountParameters() => (long)Width * KernelSize + (Bias ? (long)Width : 0);

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources)
    {
        var x = sources[0];
        var (batch, time) = (x.GetLength(0), x.GetLength(1));
        var (w, b) = (Weights!.Weight, Weights.Bias);
        var y = new double[batch, time, Width];
        for (int n = 0; n < batch; n++)
            for (int t = 0; t < time; t++)
                for (int c = 0; c < Width; c++)
                {
                    double sum = b is null ? 0 : b[c];
                    for (int i = 0; i < KernelSize && i <= t; i++) sum += w[c, i] * x[n, t - i, c];
                    y[n, t, c] = sum;
                }
        return y;
    }
}

/// <summary>A convolution's taps [Width, KernelSize] (tap i weighs the step i back) and bias [Width].</summary>
/// <param name="Weight">w [Width, KernelSize].</param>
/// <param name="Bias">b [Width], or null when the convolution has no bias.</param>
public sealed record ConvolutionWeights(DoubleTensor Weight, DoubleTensor? Bias);

}

namespace Duality.Builders
{
/// <summary>The builder method of <see cref="Ir.CausalConv1d"/>.</summary>
public static class CausalConv1dBuilder
{
    /// <summary>A causal depthwise convolution over time of the current sequence, <paramref name="kernelSize"/> taps per channel.</summary>
    public static SequenceBuilder CausalConv1d(this SequenceBuilder s, int kernelSize, bool bias = true, string? name = null,
        ConvolutionWeights? weights = null) =>
        s.Append(new CausalConv1d(s.Name(name, "conv"), s.Current, s.WidthOrZero, kernelSize, bias, weights));
}
}
