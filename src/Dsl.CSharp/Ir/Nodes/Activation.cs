using Duality.Reference;

namespace Duality.Ir;

/// <summary>y = f(x) elementwise.</summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">The node it reads: [batch, time, width].</param>
/// <param name="Kind">f.</param>
public sealed record Activation(string Name, NodeId Source, ActivationKind Kind) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() => $"Activation {Kind}";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width) =>
        check.Defined(Kind, nameof(Kind)) ? width(Source) : null;

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) =>
        SequenceMath.Map2(sources[0], sources[0], (x, _) => ScalarFunctions.Apply(Kind, x));
}
