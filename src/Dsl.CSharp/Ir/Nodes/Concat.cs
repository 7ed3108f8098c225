using Duality.Reference;

namespace Duality.Ir;

/// <summary>y = [a; b; ...] along features.</summary>
public sealed record Concat(string Name, ValueList<NodeId> Parts) : Node(Name)
{
    public override ValueList<NodeId> Sources => Parts;
    public override Node MapSources(Func<NodeId, NodeId> map) => Parts.All(p => map(p) == p) ? this : this with { Parts = Parts.Select(map).ToValueList() };
    public override string Describe() => $"Concat of {Parts.Count}";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        var widths = Parts.Select(width).ToArray();
        return check.Require(Parts.Count > 0, "empty concat", "no parts", "concatenate at least one branch") ? widths.Sum() : null;
    }

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) => SequenceMath.Concatenate(sources);
}
