namespace Duality.Ir;

/// <summary>A node's position in its graph's construction order.</summary>
/// <param name="Index">The node's index in <see cref="Graph.Nodes"/>, from 0.</param>
public readonly record struct NodeId(int Index)
{
    /// "#3": the index, as messages show an id.
    public override string ToString() => $"#{Index}";
}
