using System.Text;

namespace Duality.Ir;

/// <summary>
/// A layer of a graph. Every node maps sequences [batch, time, features] to [batch, time, features'];
/// only the feature width varies, so a node's shape is its width. Names are paths ("block1/proj"),
/// unique in their graph. Each kind, in its own file under Ir/Nodes, holds everything it means:
/// its shape rule, parameter count, weight slots and reference semantics.
/// </summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj"); it names the compiled module's parameters.</param>
public abstract record Node(string Name)
{
    /// <summary>The nodes this one reads, in argument order.</summary>
    public abstract ValueList<NodeId> Sources { get; }

    /// <summary>A short description such as "Projection 64 -> 128".</summary>
    public abstract string Describe();

    /// <summary>True when every weight this node needs is present (nodes without weights: always).</summary>
    public virtual bool HasWeights => true;

    /// <summary>This node reading <paramref name="map"/>(source) for each source; the same instance when nothing moves.</summary>
    public abstract Node MapSources(Func<NodeId, NodeId> map);

    /// <summary>
    /// Every tensor this kind holds given its hyper-parameters, in the order they are drawn, with its
    /// current value (null when absent).
    /// </summary>
    public virtual IReadOnlyList<WeightSlot> WeightSlots => [];

    /// <summary>This node with the tensors of its slots taken from <paramref name="values"/> by slot name; a missing name is an absent tensor.</summary>
    internal virtual Node WithWeights(IReadOnlyDictionary<string, DoubleTensor> values) => this;

    /// <summary>The output width, given the width of each source, its problems reported to <paramref name="check"/>; null when there is none.</summary>
    internal abstract int? InferWidth(ShapeCheck check, Func<NodeId, int> width);

    /// <summary>Trainable scalars, from hyper-parameters alone.</summary>
    internal abstract long CountParameters();

    /// <summary>y: [batch, time, width] from the sources' sequences, in argument order (float64 loops; weights present).</summary>
    internal abstract double[,,] Evaluate(IReadOnlyList<double[,,]> sources);

    /// <summary>Name, sources and whether weights are present; weight slots are derived from the fields, so they are not printed.</summary>
    protected virtual bool PrintMembers(StringBuilder builder)
    {
        builder.Append($"Name = {Name}, Sources = {Sources}, HasWeights = {HasWeights}");
        return true;
    }
}
