namespace Duality.Ir;

/// <summary>A node's position in its graph's construction order.</summary>
public readonly record struct NodeId(int Index)
{
    public override string ToString() => $"#{Index}";
}
