namespace Duality.Ir;

/// <summary>Gain [Width] and, for LayerNorm, bias [Width].</summary>
/// <param name="Gain">g [Width].</param>
/// <param name="Bias">b [Width] for a LayerNorm; null for an RmsNorm.</param>
public sealed record NormWeights(DoubleTensor Gain, DoubleTensor? Bias)
{
    /// <summary>The shape rule both norms share; only LayerNorm has a bias.</summary>
    internal static int? Check(ShapeCheck check, NodeId source, int width, double epsilon, bool affine, NormWeights? weights,
        bool hasBias, int received)
    {
        if (!check.Positive(width, "width")) return null;
        check.Input(source, width, received, $"declare the norm with width {received}");
        check.Require(epsilon > 0 && double.IsFinite(epsilon), "invalid epsilon", $"epsilon is {epsilon}", "give a small positive epsilon such as 1e-5");
        if (weights is { } w)
        {
            if (!affine)
                check.Problem("unexpected weight", "the norm is not affine but carries weights", "declare Affine = true, or drop the weights");
            check.Weight("Gain", w.Gain, width);
            if (hasBias && w.Bias is null)
                check.Problem("missing weight", "a LayerNorm's weights need a Bias", "give a Bias vector of the norm's width");
            else if (!hasBias && w.Bias is not null)
                check.Problem("unexpected weight", "an RmsNorm has no bias", "drop the Bias");
            else if (w.Bias is not null) check.Weight("Bias", w.Bias, width);
        }
        return width;
    }
}
