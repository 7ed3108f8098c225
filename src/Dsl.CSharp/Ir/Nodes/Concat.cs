using Duality.Reference;

namespace Duality.Ir;

/// <summary>y = [a; b; ...] along features.</summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Parts">The nodes concatenated, in order; at least one.</param>
public sealed record Concat(string Name, ValueList<NodeId> Parts) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => Parts ?? ValueList<NodeId>.Empty;
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => Parts.All(p => map(p) == p) ? this : this with { Parts = Parts.Select(map).ToValueList() };
    /// <inheritdoc/>
    public override string Describe() => $"Concat of {Parts?.Count ?? 0}";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        if (Parts is null)
        {
            check.Problem("missing field", "Parts is null", "give the concat a list of parts (at least one)");
            return null;
        }
        // in long: the widths of many wide parts may sum past int.MaxValue
        var total = Parts.Sum(p => (long)width(p));
        return check.Require(Parts.Count > 0, "empty concat", "no parts", "concatenate at least one branch")
               && check.FeatureWidth("the parts' widths sum", total)
            ? (int)total
            : null;
    }

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) => SequenceMath.Concatenate(sources);
}
