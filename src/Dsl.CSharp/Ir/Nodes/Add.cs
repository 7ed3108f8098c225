using Duality.Reference;

namespace Duality.Ir;

/// <summary>y = a + b (a residual connection when one side is the other's ancestor).</summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Left">a.</param>
/// <param name="Right">b, of the same width as a.</param>
public sealed record Add(string Name, NodeId Left, NodeId Right) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Left, Right);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Left) == Left && map(Right) == Right ? this : this with { Left = map(Left), Right = map(Right) };
    /// <inheritdoc/>
    public override string Describe() => "Add";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width) =>
        check.SameWidths(Left, width(Left), Right, width(Right), "add a projection on one side so both have the same width");

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) =>
        SequenceMath.Map2(sources[0], sources[1], (a, b) => a + b);
}
