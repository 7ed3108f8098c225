using Duality.Reference;

namespace Duality.Ir;

/// <summary>y = Factor * x.</summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">The node it reads: [batch, time, width].</param>
/// <param name="Factor">The finite constant multiplying x.</param>
public sealed record Scale(string Name, NodeId Source, double Factor) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() => $"Scale {Factor}";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width) =>
        check.Require(double.IsFinite(Factor), "invalid factor", $"the factor is {Factor}", "give a finite scale factor") ? width(Source) : null;

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) =>
        SequenceMath.Map2(sources[0], sources[0], (x, _) => Factor * x);
}
