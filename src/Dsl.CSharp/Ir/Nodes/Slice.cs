namespace Duality.Ir;

/// <summary>y = x[..., Start : Start + Length].</summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">The node it reads: [batch, time, width].</param>
/// <param name="Start">The first feature kept, from 0.</param>
/// <param name="Length">How many features are kept, at least 1.</param>
public sealed record Slice(string Name, NodeId Source, int Start, int Length) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() => $"Slice [{Start}, {(long)Start + Length})";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        var received = width(Source);
        // in long: Start + Length may exceed int.MaxValue
        if (Start < 0 || Length <= 0 || (long)Start + Length > received)
        {
            check.Mismatch("slice out of range", $"features [{Start}, {(long)Start + Length}) within {Diagnostic.Sequence(received)}",
                Diagnostic.Sequence(received), check.NameOf(Source),
                $"choose 0 <= start and 0 < length with start + length <= {received}");
            return null;
        }
        return Length;
    }

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources)
    {
        var x = sources[0];
        var y = new double[x.GetLength(0), x.GetLength(1), Length];
        for (int i = 0; i < x.GetLength(0); i++)
            for (int t = 0; t < x.GetLength(1); t++)
                for (int c = 0; c < Length; c++) y[i, t, c] = x[i, t, Start + c];
        return y;
    }
}
