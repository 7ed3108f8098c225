namespace Duality.Kernels;

/// <summary>
/// A row-wise kernel's rows split into ranges: one per core (at most one per row) from <see cref="ParallelWork"/>
/// elements, else one; each range a contiguous, even share of the rows.
/// </summary>
internal static class RowRanges
{
    /// <summary>Elements (rows x width) from which ranges of rows run in parallel.</summary>
    public const long ParallelWork = 1 << 16;

    public static int Count(long rows, long width) =>
        rows * width >= ParallelWork ? (int)Math.Min(Environment.ProcessorCount, Math.Max(1, rows)) : 1;

    /// <summary>range(r, first, end) for each of <paramref name="ranges"/> ranges of <paramref name="rows"/> rows, in parallel when more than one.</summary>
    public static void Run(int ranges, long rows, Action<int, long, long> range)
    {
        if (ranges == 1) range(0, 0, rows);
        else KernelTeam.For(ranges, r => range(r, rows * r / ranges, rows * (r + 1) / ranges));
    }
}
