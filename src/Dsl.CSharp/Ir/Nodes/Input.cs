namespace Duality.Ir;

/// <summary>A named graph input x: [batch, time, Features].</summary>
/// <param name="Name">The input's name, by which inputs are given and matched.</param>
/// <param name="Features">The width of x, at least 1.</param>
public sealed record Input(string Name, int Features) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList<NodeId>.Empty;
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => this;
    /// <inheritdoc/>
    public override string Describe() => $"Input {Features}";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width) =>
        check.Positive(Features, "features") ? Features : null;

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) =>
        throw new InvalidOperationException($"bug in the reference evaluator: input '{Name}' is fed, not evaluated");
}
