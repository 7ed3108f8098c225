using System.Buffers;
using System.Runtime.InteropServices;

namespace Duality.Kernels;

/// <summary>
/// A kernel's working array from the shared pool, pinned while rented and returned when disposed: the large buffers a
/// loop needs per batch row and head (its per-step records, kept states) are reused from call to call instead of
/// allocated on the large-object heap each time, whose churn brings a full collection every few calls. At least the
/// length asked for; its entries are whatever the last user left, so a kernel writes every entry before reading it.
/// </summary>
internal readonly struct RentedArray<T> : IDisposable where T : unmanaged
{
    public readonly T[] Array;
    private readonly GCHandle pin;

    public RentedArray(long length)
    {
        Array = ArrayPool<T>.Shared.Rent(checked((int)length));
        pin = GCHandle.Alloc(Array, GCHandleType.Pinned);
    }

    public void Dispose()
    {
        pin.Free();
        ArrayPool<T>.Shared.Return(Array);
    }
}
