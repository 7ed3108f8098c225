using System.Runtime.InteropServices;

namespace Duality.Runtime;

/// <summary>
/// Process-wide memory tuning for long sequences on Linux. libtorch allocates large tensors with
/// glibc's malloc, which serves blocks above 32 MiB with fresh mmap'd pages: every such tensor is
/// zero-filled by the kernel on first touch, often costing more than the computation that writes
/// it. <see cref="KeepLargeAllocations"/> makes malloc serve them from its heap and keep freed
/// memory, so a model that runs repeatedly on the same shapes reuses warm pages. It is an explicit
/// opt-in with a price in memory: freed memory is never returned to the system, and because
/// libtorch's aligned allocations cannot always reuse a freed block of their own size, the heap
/// grows to several times the working set before it settles (measured in the README's performance
/// section). <see cref="CompileOptions.ReuseBuffers"/> spares allocations without that price.
/// </summary>
public static partial class Allocation
{
    private const int TrimThreshold = -1, MmapMax = -4;

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int MallocOption(int parameter, int value);

    /// <summary>Returns true when the setting was applied (Linux with glibc), false elsewhere.</summary>
    public static bool KeepLargeAllocations()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            return MallocOption(MmapMax, 0) == 1 && MallocOption(TrimThreshold, int.MaxValue) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }
}
