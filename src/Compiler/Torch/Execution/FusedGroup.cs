namespace Duality.Torch;

/// <summary>
/// A group of nodes that a compiled graph runs as one kernel when it can: the node it produces, what it is, its
/// nodes, and how many forward passes ran it fused and how many ran its nodes one by one (gradients recorded,
/// weights without the structure it needs, or a device other than the CPU).
/// </summary>
public sealed class FusedGroup
{
    private long fused, nodeByNode;

    internal FusedGroup(string node, string kind, IReadOnlyList<string> nodes) => (Node, Kind, Nodes) = (node, kind, nodes);

    /// <summary>The node whose value the group produces.</summary>
    public string Node { get; }

    /// What the group runs as one kernel: "structure-aware gated layer" (with ", input-dependent decay" when it has one),
    /// "gate + recurrence" (with ", input-dependent decay" when the recurrence has one), "attention reading shared
    /// slices" (a gated linear attention reading each head's slice of one node where it lies, its Concat not computed;
    /// ", with the skip D v" when it adds a scaled skip), "projection + scaled skip", or "elementwise chain" (activations,
    /// scales, channel scales and sums in one pass, without gradients).
    public string Kind { get; }

    /// <summary>Every node the group computes, its result last.</summary>
    public IReadOnlyList<string> Nodes { get; }

    /// <summary>Forward passes that ran the group as one kernel.</summary>
    public long Fused => Interlocked.Read(ref fused);

    /// <summary>Forward passes that ran the group's nodes one by one.</summary>
    public long NodeByNode => Interlocked.Read(ref nodeByNode);

    internal void Count(bool ranFused) => Interlocked.Increment(ref ranFused ? ref fused : ref nodeByNode);

    /// "node: kind, F fused, N node by node".
    public override string ToString() => $"{Node}: {Kind}, {Fused} fused, {NodeByNode} node by node";
}
