using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// Outputs of the CPU kernels from recycled memory. glibc serves blocks above 32 MiB as fresh mmap'd pages
/// and unmaps them when freed, so every large tensor is zero-filled by the system on first touch (often
/// costing more than the kernel that writes it; the README's performance section has the measurements). Tensors of at least
/// <see cref="MinBytes"/> are instead built over blocks this pool owns: when libtorch releases the tensor's
/// storage, the block returns to the pool and the next tensor of that size reuses its warm pages. Idle
/// blocks are kept up to <see cref="IdleLimitBytes"/>; beyond it the oldest are freed.
/// </summary>
internal static unsafe class LargeTensors
{
    /// <summary>
    /// Tensors of at least this many bytes come from the pool. Settable so that a law can run every kernel's output
    /// through the pool on small tensors (restoring it after); nothing else sets it.
    /// </summary>
    internal static long MinBytes = 32L << 20;

    /// <summary>
    /// Idle blocks kept, in bytes; beyond it the oldest are freed. Settable so that a law can free every returned block
    /// (restoring it after); nothing else sets it.
    /// </summary>
    internal static long IdleLimitBytes = 1L << 30;

    private const nuint Alignment = 64;

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void Deleter(IntPtr data);

    // the native entry TorchSharp 0.107 itself declares (PInvoke.NativeMethods) for tensors over memory it
    // owns; a TorchSharp upgrade must keep this signature (the pooled-output law exercises it)
    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_new(IntPtr data, Deleter deleter, long* sizes, int dimensions, sbyte scalarType, sbyte dtype,
        int deviceType, int deviceIndex, [MarshalAs(UnmanagedType.U1)] bool requiresGrad);

    // kept in a static field: native code calls it long after any call that passed it
    private static readonly Deleter release = Release;
    private static readonly object gate = new();
    private static readonly Dictionary<IntPtr, long> sizes = [];
    private static readonly LinkedList<(IntPtr Block, long Bytes)> idle = [];
    private static long idleBytes;

    /// <summary>Whether a tensor of this shape and type comes from the pool.</summary>
    public static bool Pooled(long[] shape, ScalarType dtype) => Bytes(shape, dtype) >= MinBytes;

    private static long Bytes(long[] shape, ScalarType dtype)
    {
        long bytes = dtype switch { ScalarType.Float32 => 4, ScalarType.Float64 => 8, _ => 0 };
        foreach (var d in shape) bytes *= d;
        return bytes;
    }

    /// <summary>An uninitialised contiguous CPU tensor; from the pool when large enough.</summary>
    public static Tensor Empty(long[] shape, ScalarType dtype)
    {
        long bytes = Bytes(shape, dtype);
        if (bytes < MinBytes) return empty(shape, dtype: dtype);
        var block = Take(bytes);
        IntPtr handle;
        fixed (long* dims = shape)
            handle = THSTensor_new(block, release, dims, shape.Length, (sbyte)dtype, (sbyte)dtype, (int)DeviceType.CPU, 0, false);
        if (handle == IntPtr.Zero)
        {
            Release(block);
            torch.CheckForErrors();
        }
        return Tensor.UnsafeCreateTensor(handle);
    }

    public static Tensor EmptyLike(Tensor like) =>
        like.device.type == DeviceType.CPU ? Empty(like.shape, like.dtype) : empty_like(like);

    private static IntPtr Take(long bytes)
    {
        lock (gate)
            for (var node = idle.Last; node is not null; node = node.Previous)
                if (node.Value.Bytes == bytes)
                {
                    idle.Remove(node);
                    idleBytes -= bytes;
                    return node.Value.Block;
                }
        var block = (IntPtr)NativeMemory.AlignedAlloc((nuint)bytes, Alignment);
        lock (gate) sizes[block] = bytes;
        return block;
    }

    private static void Release(IntPtr block)
    {
        lock (gate)
        {
            idle.AddLast((block, sizes[block]));
            idleBytes += sizes[block];
            while (idleBytes > IdleLimitBytes && idle.First is { } oldest)
            {
                idle.RemoveFirst();
                idleBytes -= oldest.Value.Bytes;
                sizes.Remove(oldest.Value.Block);
                NativeMemory.AlignedFree((void*)oldest.Value.Block);
            }
        }
    }
}
