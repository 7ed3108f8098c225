using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Duality.Runtime;

namespace Duality.Kernels;

/// <summary>
/// Runs a kernel's independent pieces in parallel on libtorch's own OpenMP threads, where its libgomp is loaded: the
/// calling thread leads a team of at most libtorch's thread count (torch.get_num_threads), each member taking the next
/// piece until none is left. Those threads spin for a while after each of libtorch's operations, on the cores the
/// kernels then use: a kernel run on them starts at once and shares no core with a spinning thread, where the .NET
/// thread pool's workers wake late (the calling thread did 68-70% of a two-piece kernel) beside them. Elsewhere (no
/// libgomp mapped, another OpenMP runtime) <see cref="System.Threading.Tasks.Parallel.For(int, int, Action{int})"/>.
/// </summary>
internal static unsafe class KernelTeam
{
    // void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)
    private static readonly delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void> GompParallel = Find();

    /// <summary>Whether the pieces run on libtorch's OpenMP threads.</summary>
    public static bool OnOpenMp => GompParallel is not null;

    /// <summary>body(0) to body(count - 1), in parallel; an exception in a piece is thrown here once every member stops.</summary>
    public static void For(int count, Action<int> body) => For(count, body, onThreadPool: GompParallel is null);

    /// <summary>
    /// <see cref="For(int, Action{int})"/> on libtorch's OpenMP threads or, where no libgomp is mapped (or
    /// <paramref name="onThreadPool"/>: the law that reaches this path on every system), as many members on the .NET
    /// thread pool, taking pieces alike and throwing a piece's exception alike.
    /// </summary>
    internal static void For(int count, Action<int> body, bool onThreadPool)
    {
        if (count <= 0) return;
        var threads = Math.Min(count, TorchSharp.torch.get_num_threads());
        if (count == 1 || threads <= 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        var work = new Work(count, body);
        if (onThreadPool || GompParallel is null) System.Threading.Tasks.Parallel.For(0, threads, _ => work.Take());
        else
        {
            var handle = GCHandle.Alloc(work);
            try
            {
                GompParallel(&Member, GCHandle.ToIntPtr(handle), (uint)threads, 0);
            }
            finally
            {
                handle.Free();
            }
        }
        if (work.Error is { } error) ExceptionDispatchInfo.Throw(error);
    }

    private sealed class Work(int count, Action<int> body)
    {
        private readonly int count = count;
        private readonly Action<int> body = body;
        private int next;
        public Exception? Error;

        /// <summary>One member's share: the next piece until none is left, or until a piece has thrown.</summary>
        public void Take()
        {
            try
            {
                for (int i = Interlocked.Increment(ref next) - 1; i < count && Error is null; i = Interlocked.Increment(ref next) - 1)
                    body(i);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref Error, e, null);
            }
        }
    }

    /// <summary>One member of the OpenMP team.</summary>
    [UnmanagedCallersOnly]
    private static void Member(nint data) => ((Work)GCHandle.FromIntPtr(data).Target!).Take();

    /// <summary>GOMP_parallel of the libgomp mapped into the process (libtorch's), or null.</summary>
    private static delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void> Find()
    {
        try
        {
            if (!OperatingSystem.IsLinux() || NativeSetup.MappedPath("libgomp") is not { } path) return null;
            if (!NativeLibrary.TryLoad(path, out var library) || !NativeLibrary.TryGetExport(library, "GOMP_parallel", out var entry)) return null;
            return (delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void>)entry;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            // /proc/self/maps unreadable (a sandbox): the thread pool
            return null;
        }
    }
}
