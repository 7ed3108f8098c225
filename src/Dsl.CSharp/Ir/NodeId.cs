namespace Duality.Ir;

/// <summary>A node's position in its graph's construction order.</summary>
public readonly record struct NodeId(int Index)
{
    /// "#3": the index, as messages show an id.
    public override string ToString() => $"#{Index}";
}
