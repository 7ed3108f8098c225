namespace Duality.Ir;

/// <summary>Every concrete node kind, for coverage checks and tools: the public sealed records deriving from <see cref="Node"/>.</summary>
public static class NodeKinds
{
    /// <summary>The order of the kinds the IR started with; later kinds follow by name.</summary>
    private static readonly Type[] First =
    [
        typeof(Input), typeof(Projection), typeof(Gate), typeof(LinearRecurrence), typeof(Attention),
        typeof(Activation), typeof(Add), typeof(Concat), typeof(Slice), typeof(LayerNorm), typeof(RmsNorm),
        typeof(Scale),
    ];

    /// The node record types: the twelve kinds the IR started with in a fixed order (Input, Projection, Gate,
    /// LinearRecurrence, Attention, Activation, Add, Concat, Slice, LayerNorm, RmsNorm, Scale), then later kinds by name.
    public static readonly IReadOnlyList<Type> All = typeof(Node).Assembly.GetTypes()
        .Where(t => t.IsPublic && t.IsSealed && t.IsSubclassOf(typeof(Node)))
        .OrderBy(t => Array.IndexOf(First, t) is var i && i >= 0 ? i : First.Length)
        .ThenBy(t => t.Name, StringComparer.Ordinal)
        .ToArray();
}
