using Duality.Kernels;
using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// A 64-bit hash of the bits of contiguous CPU tensors, read in place at memory speed (four independent
/// multiply-xor lanes of 32-bit words): any change to any element changes it except with probability
/// about 2^-64. Used to notice weight updates without a copy of the weights.
/// </summary>
internal static unsafe class Fingerprint
{
    private const uint Prime = 0x9E3779B1;

    /// <summary>Tensors of at least this many bytes are hashed as two halves on two threads.</summary>
    public const int ParallelBytes = 1 << 20;

    public static ulong Of(IReadOnlyList<Tensor> tensors)
    {
        ulong hash = 14695981039346656037;
        foreach (var t in tensors)
        {
            var readable = t.is_contiguous() && t.device.type == DeviceType.CPU ? t : t.contiguous().cpu();
            using var alive = RawStorage.KeepAlive(readable);
            var bytes = readable.bytes;
            hash = Mix(hash ^ Halves(bytes) ^ (ulong)bytes.Length);
        }
        return hash;
    }

    /// <summary>Large tensors are hashed as two halves on two threads.</summary>
    private static ulong Halves(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < ParallelBytes || Environment.ProcessorCount < 2) return Words(bytes);
        var half = bytes.Length / 2 / 64 * 64;
        fixed (byte* start = bytes)
        {
            var (pointer, length) = ((nint)start, bytes.Length);
            ulong first = 0, second = 0;
            System.Threading.Tasks.Parallel.Invoke(
                () => first = Words(new ReadOnlySpan<byte>((byte*)pointer, half)),
                () => second = Words(new ReadOnlySpan<byte>((byte*)pointer + half, length - half)));
            return Mix(first ^ Mix(second));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static ulong Words(ReadOnlySpan<byte> bytes)
    {
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(bytes);
        int n = Vector<uint>.Count, i = 0;
        var prime = new Vector<uint>(Prime);
        Vector<uint> a = new(1), b = new(2), c = new(3), d = new(4);
        for (; i <= words.Length - 4 * n; i += 4 * n)
        {
            a = (a ^ new Vector<uint>(words.Slice(i))) * prime;
            b = (b ^ new Vector<uint>(words.Slice(i + n))) * prime;
            c = (c ^ new Vector<uint>(words.Slice(i + 2 * n))) * prime;
            d = (d ^ new Vector<uint>(words.Slice(i + 3 * n))) * prime;
        }
        ulong hash = 0;
        for (int lane = 0; lane < n; lane++)
            hash = Mix(Mix(Mix(Mix(hash ^ a[lane]) ^ b[lane]) ^ c[lane]) ^ d[lane]);
        for (; i < words.Length; i++) hash = Mix(hash ^ words[i]);
        for (int j = words.Length * 4; j < bytes.Length; j++) hash = Mix(hash ^ bytes[j]);
        return hash;
    }

    /// <summary>A 64-bit finaliser (splitmix64's).</summary>
    private static ulong Mix(ulong x)
    {
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB;
        return x ^ (x >> 31);
    }
}
