using Duality.Builders;
using Duality.Ir;

namespace Duality.Ir
{

/// <summary>
/// mLSTM's normalised readout, per head h of Heads (head-major blocks of d_v = width(Value) / Heads channels):
///   y[h d_v + c] = value[h d_v + c] / max(|normaliser[h]|, 1)
/// No weights. The lowered form of a normalised <see cref="GatedLinearAttention"/> ends with it.
/// </summary>
/// <param name="Name">The node's path, unique in its graph ("block1/gla").</param>
/// <param name="Value">The values o, [batch, time, Heads*d_v].</param>
/// <param name="Normaliser">The normalisers n . q, one per head, [batch, time, Heads].</param>
/// <param name="Heads">H, at least 1; the value's width is a multiple of it.</param>
public sealed record NormalisedReadout(string Name, NodeId Value, NodeId Normaliser, int Heads) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Value, Normaliser);

    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) =>
        map(Value) == Value && map(Normaliser) == Normaliser ? this : this with { Value = map(Value), Normaliser = map(Normaliser) };

    /// <inheritdoc/>
    public override string Describe() => $"NormalisedReadout ({Heads} heads, value / max(|normaliser|, 1))";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        if (!check.Positive(Heads, "heads")) return null;
        var values = width(Value);
        if (values % Heads != 0)
            check.Mismatch("shape mismatch", $"Value of Heads*d_v features, a multiple of {Heads}", Diagnostic.Sequence(values),
                check.NameOf(Value), $"project the Value branch to Heads*d_v features, or declare the heads that divide {values}");
        check.Input(Normaliser, Heads, width(Normaliser), $"project the Normaliser branch to Heads = {Heads} features (one per head)");
        return check.Failed ? null : values;
    }

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources)
    {
        var (value, normaliser) = (sources[0], sources[1]);
        var (batch, time, width) = (value.GetLength(0), value.GetLength(1), value.GetLength(2));
        var channels = width / Heads;
        var y = new double[batch, time, width];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < time; t++)
                for (int c = 0; c < width; c++)
                    y[b, t, c] = value[b, t, c] / Math.Max(Math.Abs(normaliser[b, t, c / channels]), 1);
        return y;
    }
}

}

namespace Duality.Builders
{
/// <summary>The builder method of <see cref="Ir.NormalisedReadout"/>.</summary>
public static class NormalisedReadoutBuilder
{
    /// <summary>
    /// The current sequence (Heads*d_v values) divided per head by max(|n|, 1), n the <paramref name="normaliser"/>
    /// branch of <paramref name="heads"/> features (built under "name/normaliser"); see <see cref="Ir.NormalisedReadout"/>.
    /// </summary>
    public static SequenceBuilder NormalisedReadout(this SequenceBuilder s, int heads, Func<SequenceBuilder, SequenceBuilder> normaliser,
        string? name = null)
    {
        var readoutName = s.Name(name, "normalised");
        var value = s.Current;
        var at = s.WithBranch(normaliser, readoutName + "/normaliser", out var normaliserId);
        return at.Append(new NormalisedReadout(readoutName, value, normaliserId, heads));
    }
}
}
