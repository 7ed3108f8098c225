using Duality.Builders;
using Duality.Ir;
using Duality.Reference;

namespace Duality.Ir
{

/// <summary>
/// Normalisation of each of Groups consecutive groups of Width / Groups features (one per head: RetNet's, GLA's and
/// mLSTM's per-head norms), then a gain and bias per feature:
///   y = (x - mean_g) / sqrt(mean_g((x - mean_g)^2) + Epsilon) * g + b     (Centre: PyTorch's GroupNorm at each step)
///   y = x / sqrt(mean_g(x^2) + Epsilon) * g                               (not Centre: RMS per group, no bias)
/// Gain and Bias: [Width]; initially g = 1, b = 0 (perturbed: g ~ U(0.5, 1.5), b ~ U(-0.5, 0.5)).
/// </summary>
/// <param name="Name">The node's path.</param>
/// <param name="Source">The sequence normalised.</param>
/// <param name="Width">The number of features; Groups divides it.</param>
/// <param name="Groups">The number of groups (heads).</param>
/// <param name="Epsilon">Added to each group's mean square.</param>
/// <param name="Affine">Whether a gain (and, centred, a bias) follows.</param>
/// <param name="Centre">Whether each group's mean is subtracted (GroupNorm), or not (RMS per group).</param>
/// <param name="Weights">Gain [Width] and, centred, Bias [Width]; null before initialisation.</param>
public sealed record GroupNorm(string Name, NodeId Source, int Width, int Groups, double Epsilon = 1e-5, bool Affine = true,
    bool Centre = true, NormWeights? Weights = null) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() => $"GroupNorm {Width} ({Groups} groups{(Centre ? "" : ", RMS")})";
    /// <inheritdoc/>
    public override bool HasWeights => !Affine || Weights is not null;

    /// <summary>Gain [Width] and, centred, Bias [Width], when affine.</summary>
    public override IReadOnlyList<WeightSlot> WeightSlots => !Affine ? []
        : Centre
            ? [new WeightSlot("Gain", [Width], new WeightDraw.Constant(1, 0.5, 1.5), Weights?.Gain),
               new WeightSlot("Bias", [Width], new WeightDraw.Constant(0, -0.5, 0.5), Weights?.Bias)]
            : [new WeightSlot("Gain", [Width], new WeightDraw.Constant(1, 0.5, 1.5), Weights?.Gain)];

    internal override Node WithWeights(IReadOnlyDictionary<string, DoubleTensor> values) =>
        this with { Weights = new NormWeights(values["Gain"], values.GetValueOrDefault("Bias")) };

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        if (!check.Positive(Groups, "groups")) return null;
        if (Width > 0 && Width % Groups != 0)
        {
            check.Problem("invalid groups", $"{Groups} groups do not divide the width {Width}", "give a number of groups that divides the width");
            return null;
        }
        return NormWeights.Check(check, Source, Width, Epsilon, Affine, Weights, hasBias: Centre, width(Source));
    }

    internal override long CountParameters() => Affine ? (Centre ? 2L : 1L) * Width : 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) =>
        SequenceMath.Normalise(sources[0], Epsilon, Centre, Weights?.Gain, Weights?.Bias, Groups);
}

}

namespace Duality.Builders
{
/// <summary>The builder method of <see cref="Ir.GroupNorm"/>.</summary>
public static class GroupNormBuilder
{
    /// <summary>
    /// Normalises each of <paramref name="groups"/> consecutive groups of the current features (centred, or RMS without
    /// <paramref name="centre"/>), then a gain and bias per feature when <paramref name="affine"/>.
    /// </summary>
    public static SequenceBuilder GroupNorm(this SequenceBuilder s, int groups, double epsilon = 1e-5, bool affine = true, bool centre = true,
        string? name = null, NormWeights? weights = null) =>
        s.Append(new GroupNorm(s.Name(name, "groupnorm"), s.Current, s.WidthOrZero, groups, epsilon, affine, centre, weights));
}
}
