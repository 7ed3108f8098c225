namespace Duality.Kernels;

/// <summary>Runs a kernel once per (batch row, head) pair: in parallel when the work per pair pays for the tasks.</summary>
internal static class HeadPairs
{
    /// <summary>Work per pair (steps x key x value) from which two or more pairs run in parallel, one task per pair.</summary>
    public const int ParallelWork = 1 << 14;

    public static void Run(int batch, int heads, long workPerPair, Action<int, int> head)
    {
        var pairs = batch * heads;
        if (pairs > 1 && workPerPair >= ParallelWork)
            KernelTeam.For(pairs, p => head(p / heads, p % heads));
        else
            for (int p = 0; p < pairs; p++) head(p / heads, p % heads);
    }
}
