using Duality.Builders;
using Duality.Ir;
using Duality.Reference;

namespace Duality.Ir
{

/// <summary>
/// A learned factor per channel: y_t[c] = s[c] x_t[c] over Width channels (a diagonal projection without bias).
/// Factors: [Width]; initially s ~ U(InitialLow, InitialHigh) (1 when both are 1). Mamba-2's skip D, and Griffin's
/// log-decay c log a = -c softplus(-Lambda) of the RG-LRU, are such factors.
/// </summary>
/// <param name="Name">The node's path.</param>
/// <param name="Source">The sequence scaled.</param>
/// <param name="Width">The number of channels.</param>
/// <param name="Factors">s [Width], or null before initialisation.</param>
/// <param name="InitialLow">The lower end of the factors' initial range.</param>
/// <param name="InitialHigh">The upper end of the factors' initial range.</param>
public sealed record ChannelScale(string Name, NodeId Source, int Width, DoubleTensor? Factors = null, double InitialLow = 1,
    double InitialHigh = 1) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() => $"ChannelScale {Width}";
    /// <inheritdoc/>
    public override bool HasWeights => Factors is not null;

    /// <summary>Factors [Width], drawn from U(InitialLow, InitialHigh).</summary>
    public override IReadOnlyList<WeightSlot> WeightSlots =>
        [new WeightSlot("Factors", [Width], new WeightDraw.Uniform(InitialLow, InitialHigh), Factors)];

    internal override Node WithWeights(IReadOnlyDictionary<string, DoubleTensor> values) => this with { Factors = values["Factors"] };

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        var received = width(Source);
        if (!check.Positive(Width, "width")) return null;
        check.Input(Source, Width, received, $"declare the channel scale with width {received}");
        check.Require(double.IsFinite(InitialLow) && double.IsFinite(InitialHigh) && InitialLow <= InitialHigh, "invalid initial range",
            $"the factors' initial range is [{InitialLow}, {InitialHigh}]", "give a finite range with low <= high");
        if (Factors is { } s) check.Weight("Factors", s, Width);
        return Width;
    }

    internal override long CountParameters() => Width;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources)
    {
        var x = sources[0];
        var y = new double[x.GetLength(0), x.GetLength(1), Width];
        for (int n = 0; n < x.GetLength(0); n++)
            for (int t = 0; t < x.GetLength(1); t++)
                for (int c = 0; c < Width; c++) y[n, t, c] = Factors![c] * x[n, t, c];
        return y;
    }
}

}

namespace Duality.Builders
{
/// <summary>The builder method of <see cref="Ir.ChannelScale"/>.</summary>
public static class ChannelScaleBuilder
{
    /// <summary>
    /// y_t[c] = s[c] x_t[c], a learned factor per channel of the current sequence, drawn from U(<paramref name="initialLow"/>,
    /// <paramref name="initialHigh"/>) unless <paramref name="factors"/> are given.
    /// </summary>
    public static SequenceBuilder ChannelScale(this SequenceBuilder s, double initialLow = 1, double initialHigh = 1, string? name = null,
        DoubleTensor? factors = null) =>
        s.Append(new ChannelScale(s.Name(name, "channelscale"), s.Current, s.WidthOrZero, factors, initialLow, initialHigh));
}
}
