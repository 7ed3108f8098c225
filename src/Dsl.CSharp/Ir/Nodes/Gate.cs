using Duality.Reference;

namespace Duality.Ir;

/// <summary>y = value * activation(gate), elementwise; both branches have the same width.</summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Value">The value branch.</param>
/// <param name="Gating">The gate branch, of the value's width.</param>
/// <param name="Activation">Applied to the gate (default the identity: a plain product).</param>
public sealed record Gate(string Name, NodeId Value, NodeId Gating, ActivationKind Activation = ActivationKind.Identity)
    : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Value, Gating);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Value) == Value && map(Gating) == Gating ? this : this with { Value = map(Value), Gating = map(Gating) };
    /// <inheritdoc/>
    public override string Describe() =>
        Activation == ActivationKind.Identity ? "Gate (product)" : $"Gate (value * {Activation}(gate))";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width) =>
        check.Defined(Activation, nameof(Activation))
            ? check.SameWidths(Value, width(Value), Gating, width(Gating), "project one branch so both branches have the same width")
            : null;

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources) =>
        SequenceMath.Map2(sources[0], sources[1], (v, g) => v * ScalarFunctions.Apply(Activation, g));
}
