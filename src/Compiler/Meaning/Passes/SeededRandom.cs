namespace Duality.Passes;

/// <summary>
/// SplitMix64: a tiny generator whose stream depends only on its seed, on every platform and .NET
/// version, so seeded initialisation is reproducible everywhere.
/// </summary>
internal sealed class SeededRandom(ulong seed)
{
    private ulong state = seed;

    /// <summary>A stream for one node: the seed mixed with a stable (FNV-1a) hash of the node's path.</summary>
    public static SeededRandom ForNode(int seed, string path)
    {
        ulong hash = 14695981039346656037UL;
        foreach (var c in path)
        {
            hash ^= c;
            hash *= 1099511628211UL;
        }
        return new SeededRandom(hash ^ ((ulong)(uint)seed * 0x9E3779B97F4A7C15UL));
    }

    public ulong NextBits()
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1).</summary>
    public double NextDouble() => (NextBits() >> 11) * (1.0 / (1UL << 53));

    public double Uniform(double low, double high) => low + (high - low) * NextDouble();

    /// <summary>Standard normal (Box-Muller).</summary>
    public double Gaussian()
    {
        var u = 1.0 - NextDouble();
        var v = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u)) * Math.Cos(2.0 * Math.PI * v);
    }
}
