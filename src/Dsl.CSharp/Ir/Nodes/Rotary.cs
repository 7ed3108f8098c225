using Duality.Builders;
using Duality.Ir;

namespace Duality.Ir
{

/// <summary>
/// Rotary position embedding (RoPE; RetNet's xPos rotation without its scaling). The Width features are Heads
/// head-major blocks of d = Width / Heads features (d even); within each head the pair (2j, 2j+1), j &lt; d/2, is
/// rotated by t theta_j at step t (0-based):
///   y_t[2j]   = x_t[2j] cos(t theta_j) - x_t[2j+1] sin(t theta_j)
///   y_t[2j+1] = x_t[2j] sin(t theta_j) + x_t[2j+1] cos(t theta_j)
/// with theta_j = 10000^(-2j/d) unless Angles gives them. Rotating queries and keys this way makes
/// q_t' . k_s' = sum_j (q_t pair j) . R((s - t) theta_j) (k_s pair j), a function of t - s only: the complex decay
/// gamma e^(i theta_j) per key pair of RetNet. No trainable weights.
/// </summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">The node it reads: [batch, time, width].</param>
/// <param name="Width">The features of the input and of the output, Heads blocks of d.</param>
/// <param name="Heads">H, the head-major blocks, each of an even width d = Width / H.</param>
/// <param name="Angles">theta_j in radians per step, [d/2], shared by every head, a fixed constant; null for
/// theta_j = 10000^(-2j/d).</param>
public sealed record Rotary(string Name, NodeId Source, int Width, int Heads, DoubleTensor? Angles = null) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() =>
        $"Rotary {Width} ({Heads} heads{(Angles is { } a ? $", angles {string.Join(" ", a.Data.Select(v => v.ToString("G4")))}" : "")})";

    /// <summary>d = Width / Heads, the features of one head.</summary>
    public int HeadWidth => Heads > 0 ? Width / Heads : 0;

    /// <summary>theta_j, the angle pair j of every head turns by per step: Angles[j], or 10000^(-2j/d).</summary>
    public double Theta(int j) => Angles is { } given ? given[j] : Math.Pow(10000, -2.0 * j / HeadWidth);

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        var received = width(Source);
        if (!check.Positive(Width, "width") | !check.Positive(Heads, "heads")) return null;
        check.Input(Source, Width, received, $"declare the rotary embedding with width {received}, or project to {Width} first");
        if (Width % Heads != 0)
        {
            check.Problem("invalid size", $"Width = {Width} is not divisible by Heads = {Heads}",
                $"give a number of Heads dividing the width {Width} into blocks of even width{EvenHeads()}");
            return null;
        }
        if (HeadWidth % 2 != 0)
        {
            check.Problem("invalid size", $"the head width Width / Heads = {Width} / {Heads} = {HeadWidth} is odd, and features rotate in pairs",
                $"give heads of even width{EvenHeads()}");
            return null;
        }
        if (Angles is { } angles)
        {
            if (angles.Shape.Count != 1 || angles.Shape[0] != HeadWidth / 2)
                check.Problem("invalid angles", $"Angles {angles.ShapeText} for heads of width {HeadWidth}",
                    $"give one theta per feature pair of a head: Angles [{HeadWidth / 2}], or leave Angles out for 10000^(-2j/d)");
            else if (!angles.IsFinite)
                check.Problem("invalid angles", "Angles contains NaN or infinity", "give finite angles in radians per step");
        }
        return Width;
    }

    /// <summary>
    /// ", for example Heads = h" with the most heads of even width up to the Heads asked for (Width / 2, heads of width 2,
    /// when none is found in a bounded search), or how to get an even width.
    /// </summary>
    private string EvenHeads()
    {
        if (Width % 2 != 0) return $" (the width {Width} is odd: project to an even width first)";
        var start = Math.Min(Heads, Width / 2);
        for (int h = start; h >= 1 && h > start - 65536; h--)
            if (Width % h == 0 && Width / h % 2 == 0) return $", for example Heads = {h}";
        return $", for example Heads = {Width / 2}";
    }

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources)
    {
        var x = sources[0];
        var (batch, time) = (x.GetLength(0), x.GetLength(1));
        var y = new double[batch, time, Width];
        for (int t = 0; t < time; t++)
            for (int j = 0; j < HeadWidth / 2; j++)
            {
                var (cos, sin) = (Math.Cos(t * Theta(j)), Math.Sin(t * Theta(j)));
                for (int n = 0; n < batch; n++)
                    for (int h = 0; h < Heads; h++)
                    {
                        int even = h * HeadWidth + 2 * j, odd = even + 1;
                        y[n, t, even] = x[n, t, even] * cos - x[n, t, odd] * sin;
                        y[n, t, odd] = x[n, t, even] * sin + x[n, t, odd] * cos;
                    }
            }
        return y;
    }
}

}

namespace Duality.Builders
{
/// <summary>The builder method of <see cref="Ir.Rotary"/>.</summary>
public static class RotaryBuilder
{
    /// <summary>
    /// The current sequence's <paramref name="heads"/> blocks of d features rotated pair by pair, pair j by t theta_j at
    /// step t: theta_j = <paramref name="angles"/>[j] ([d/2]), or 10000^(-2j/d) when none are given.
    /// </summary>
    public static SequenceBuilder Rotary(this SequenceBuilder s, int heads, double[]? angles = null, string? name = null) =>
        s.Append(new Rotary(s.Name(name, "rotary"), s.Current, s.WidthOrZero, heads, angles is null ? null : DoubleTensor.Vector(angles)));
}
}
