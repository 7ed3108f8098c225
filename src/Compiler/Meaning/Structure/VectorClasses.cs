namespace Duality.Structure;

/// <summary>
/// Classes of vectors equal up to rounding (<see cref="Same"/>), numbered in order of first appearance, each
/// represented by its first vector. With a relative tolerance of 0 the classes are exact. Vectors are bucketed by
/// their entries rounded relative to their largest, so equal vectors are found at once; one not found in its bucket is
/// compared with every class before it opens one (past a few thousand classes, it opens one at once).
/// </summary>
internal sealed class VectorClasses(double tolerance = VectorClasses.Rounding)
{
    /// <summary>The relative tolerance for "equal up to rounding" in float64.</summary>
    public const double Rounding = 1e-11;

    private const int SearchedClasses = 4096;

    private readonly List<double[]> representatives = [];
    private readonly Dictionary<long, List<int>> buckets = [];

    public int Count => representatives.Count;

    public double[] this[int id] => representatives[id];

    /// <summary>Every class's representative, in order.</summary>
    public double[][] Representatives => [.. representatives];

    /// <summary>Equal up to rounding: every difference within <paramref name="tolerance"/> of the larger vector's largest entry.</summary>
    public static bool Same(double[] a, double[] b, double tolerance = Rounding)
    {
        if (a.Length != b.Length) return false;
        double scale = 0, difference = 0;
        for (int i = 0; i < a.Length; i++)
        {
            scale = Math.Max(scale, Math.Max(Math.Abs(a[i]), Math.Abs(b[i])));
            difference = Math.Max(difference, Math.Abs(a[i] - b[i]));
        }
        return difference <= tolerance * scale;
    }

    /// <summary>The class of <paramref name="v"/>, opening a new one when it equals none.</summary>
    public int Of(double[] v)
    {
        var bucket = Bucket(v);
        if (buckets.TryGetValue(bucket, out var ids))
            foreach (var id in ids)
                if (Same(representatives[id], v, tolerance)) return id;
        // exact classes are found in their bucket; otherwise a vector whose rounding straddles a bucket's edge is searched for
        var found = tolerance == 0 || representatives.Count > SearchedClasses ? -1 : representatives.FindIndex(r => Same(r, v, tolerance));
        if (found < 0)
        {
            found = representatives.Count;
            representatives.Add(v);
        }
        if (ids is null) buckets[bucket] = ids = [];
        if (!ids.Contains(found)) ids.Add(found);
        return found;
    }

    /// <summary>The classes of every vector: the representatives, and each vector's class.</summary>
    public static (double[][] Distinct, int[] Index) Of(IReadOnlyList<double[]> vectors, double tolerance)
    {
        var classes = new VectorClasses(tolerance);
        var index = new int[vectors.Count];
        for (int i = 0; i < vectors.Count; i++) index[i] = classes.Of(vectors[i]);
        return (classes.Representatives, index);
    }

    private long Bucket(double[] v)
    {
        var hash = new HashCode();
        hash.Add(v.Length);
        if (tolerance == 0)
        {
            foreach (var x in v) hash.Add(x == 0 ? 0.0 : x);
            return hash.ToHashCode();
        }
        var scale = 0.0;
        foreach (var x in v) scale = Math.Max(scale, Math.Abs(x));
        foreach (var x in v) hash.Add(scale == 0 ? 0 : Math.Round(x / scale * 1e6));
        return hash.ToHashCode();
    }
}
