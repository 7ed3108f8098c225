using Duality.Reference;

namespace Duality.Ir;

/// <summary>
/// y = (x - mean) / sqrt(var + Epsilon) * g + b over features (biased variance);
/// initially g = 1, b = 0 (perturbed: g ~ U(0.5, 1.5), b ~ U(-0.5, 0.5)).
/// </summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">The node it reads: [batch, time, width].</param>
/// <param name="Width">The width normalised over.</param>
/// <param name="Epsilon">Added to the variance, positive (default 1e-5).</param>
/// <param name="Affine">Whether g and b are applied (default true).</param>
/// <param name="Weights">g and b, or null to have them initialised.</param>
public sealed record LayerNorm(string Name, NodeId Source, int Width, double Epsilon = 1e-5, bool Affine = true,
    NormWeights? Weights = null) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() => $"LayerNorm {Width}";
    /// <inheritdoc/>
    public override bool HasWeights => !Affine || Weights is not null;

    /// When Affine: Gain [Width] (1; perturbed U(0.5, 1.5)) and Bias [Width] (0; perturbed U(-0.5, 0.5)); none otherwise.
    public override IReadOnlyList<WeightSlot> WeightSlots => Affine
        ? [new WeightSlot("Gain", [Width], new WeightDraw.Constant(1, 0.5, 1.5), Weights?.Gain),
           new WeightSlot("Bias", [Width], new WeightDraw.Constant(0, -0.5, 0.5), Weights?.Bias)]
        : [];

    internal override Node WithWeights(IReadOnlyDictionary<string, DoubleTensor> values) =>
        this with { Weights = new NormWeights(values["Gain"], values.GetValueOrDefault("Bias")) };

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width) =>
        NormWeights.Check(check, Source, Width, Epsilon, Affine, Weights, hasBias: true, width(Source));

    internal override long CountParameters() => Affine ? 2L * Width : 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) =>
        SequenceMath.Normalise(sources[0], Epsilon, centre: true, Weights?.Gain, Weights?.Bias);
}
