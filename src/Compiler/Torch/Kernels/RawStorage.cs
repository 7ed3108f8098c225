using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>Raw-storage access to contiguous CPU tensors, for the kernels.</summary>
internal static unsafe class RawStorage
{
    public static T* Pointer<T>(Tensor tensor) where T : unmanaged =>
        (T*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(MemoryMarshal.Cast<byte, T>(tensor.bytes)));

    public static T* PointerOrNull<T>(Tensor? tensor) where T : unmanaged => tensor is null ? null : Pointer<T>(tensor);

    /// <summary>
    /// Keeps tensors reachable until the returned value is disposed: a kernel holding only raw pointers must
    /// not let the garbage collector finalise (and free) a tensor whose managed wrapper is its sole owner.
    /// </summary>
    public static Reachable KeepAlive(params Tensor?[] tensors) => new(tensors);

    public readonly struct Reachable(Tensor?[] tensors) : IDisposable
    {
        public void Dispose() => GC.KeepAlive(tensors);
    }
}
