namespace Duality.Passes;

/// <summary>
/// The upper triangle of a symmetric d x d matrix, row-major: pair (a, b) with a &lt;= b has index
/// a d - a (a - 1) / 2 + (b - a), and there are d (d + 1) / 2 pairs. Used wherever x x^T is stored
/// once per pair (the compressed construction, the fitted order-3 tensors).
/// </summary>
internal static class SymmetricPairs
{
    public static int Count(int d) => d * (d + 1) / 2;

    /// <summary>The index of pair {p, q}, in either order.</summary>
    public static int Index(int p, int q, int d)
    {
        var (a, b) = (Math.Min(p, q), Math.Max(p, q));
        return a * d - a * (a - 1) / 2 + (b - a);
    }

    /// <summary>The flat positions a d + b of the pairs in index order, to select them from a flattened matrix.</summary>
    public static long[] FlatPositions(int d) =>
        Enumerable.Range(0, d).SelectMany(a => Enumerable.Range(a, d - a).Select(b => (long)a * d + b)).ToArray();
}
