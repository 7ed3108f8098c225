using Duality.Reference;

namespace Duality.Ir;

/// <summary>y = x / sqrt(mean(x^2) + Epsilon) * g over features; initially g = 1 (perturbed: g ~ U(0.5, 1.5)).</summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">The node it reads: [batch, time, width].</param>
/// <param name="Width">The width normalised over.</param>
/// <param name="Epsilon">Added to the mean square, positive (default 1e-6).</param>
/// <param name="Affine">Whether g is applied (default true).</param>
/// <param name="Weights">g (Bias null), or null to have it initialised.</param>
public sealed record RmsNorm(string Name, NodeId Source, int Width, double Epsilon = 1e-6, bool Affine = true,
    NormWeights? Weights = null) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() => $"RmsNorm {Width}";
    /// <inheritdoc/>
    public override bool HasWeights => !Affine || Weights is not null;

    /// When Affine: Gain [Width] (1; perturbed U(0.5, 1.5)); none otherwise.
    public override IReadOnlyList<WeightSlot> WeightSlots =>
        Affine ? [new WeightSlot("Gain", [Width], new WeightDraw.Constant(1, 0.5, 1.5), Weights?.Gain)] : [];

    internal override Node WithWeights(IReadOnlyDictionary<string, DoubleTensor> values) =>
        this with { Weights = new NormWeights(values["Gain"], null) };

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width) =>
        NormWeights.Check(check, Source, Width, Epsilon, Affine, Weights, hasBias: false, width(Source));

    internal override long CountParameters() => Affine ? Width : 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) =>
        SequenceMath.Normalise(sources[0], Epsilon, centre: false, Weights?.Gain, null);
}
