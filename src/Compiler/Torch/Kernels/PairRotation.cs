using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Duality.Kernels;

/// <summary>
/// Each head's feature pairs (2j, 2j+1) rotated in one pass: y[i] = x[i] c[i] + x[i xor 1] s[i], with per step the
/// tables c = (cos, cos) and s = (-sin, sin) of every pair's angle (the rotation by -angle, its transpose, is the same pass
/// with s negated). x, y: [rows, heads, head width], row r at step r mod time; c, s: [time, head width]. Contiguous.
/// Parallel over ranges of rows (<see cref="RowRanges"/>).
/// </summary>
internal static unsafe class PairRotation
{
    public static void Run<T>(T* x, T* c, T* s, T* y, long rows, int time, int heads, int headWidth) where T : unmanaged, IFloatingPointIeee754<T>
        => RowRanges.Run(RowRanges.Count(rows, (long)heads * headWidth), rows, (_, first, end) => Rows(x, c, s, y, first, end, time, heads, headWidth));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows<T>(T* x, T* c, T* s, T* y, long first, long end, int time, int heads, int headWidth)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = Vector<T>.Count;
        var swaps = Swaps<T>();
        for (long r = first; r < end; r++)
        {
            long step = r % time;
            T* cosines = c + step * headWidth, sines = s + step * headWidth;
            for (int h = 0; h < heads; h++)
            {
                long offset = (r * heads + h) * headWidth;
                T* from = x + offset, to = y + offset;
                int i = 0;
                if (swaps)
                    for (; i <= headWidth - n; i += n)
                    {
                        var v = Vector.Load(from + i);
                        Vector.Store(VectorFused.MultiplyAdd(SwapPairs(v), Vector.Load(sines + i), v * Vector.Load(cosines + i)), to + i);
                    }
                for (; i < headWidth; i += 2)
                {
                    T even = from[i], odd = from[i + 1];
                    (to[i], to[i + 1]) = (T.FusedMultiplyAdd(odd, sines[i], even * cosines[i]), T.FusedMultiplyAdd(even, sines[i + 1], odd * cosines[i + 1]));
                }
            }
        }
    }

    /// <summary>Whether <see cref="SwapPairs{T}"/> has a shuffle for this Vector&lt;T&gt;.</summary>
    private static bool Swaps<T>() where T : unmanaged =>
        (typeof(T) == typeof(float) || typeof(T) == typeof(double))
        && (Vector<byte>.Count == 16 && Vector128.IsHardwareAccelerated || Vector<byte>.Count == 32 && Vector256.IsHardwareAccelerated
            || Vector<byte>.Count == 64 && Vector512.IsHardwareAccelerated);

    /// <summary>v with the entries of each pair exchanged: (v1, v0, v3, v2, ...).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> SwapPairs<T>(Vector<T> v) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            if (Vector<byte>.Count == 32)
                return Vector256.Shuffle(v.AsVector256().AsSingle(), Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6)).As<float, T>().AsVector();
            if (Vector<byte>.Count == 64)
                return Vector512.Shuffle(v.AsVector512().AsSingle(), Vector512.Create(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14))
                    .As<float, T>().AsVector();
            return Vector128.Shuffle(v.AsVector128().AsSingle(), Vector128.Create(1, 0, 3, 2)).As<float, T>().AsVector();
        }
        if (Vector<byte>.Count == 32)
            return Vector256.Shuffle(v.AsVector256().AsDouble(), Vector256.Create(1L, 0, 3, 2)).As<double, T>().AsVector();
        if (Vector<byte>.Count == 64)
            return Vector512.Shuffle(v.AsVector512().AsDouble(), Vector512.Create(1L, 0, 3, 2, 5, 4, 7, 6)).As<double, T>().AsVector();
        return Vector128.Shuffle(v.AsVector128().AsDouble(), Vector128.Create(1L, 0)).As<double, T>().AsVector();
    }
}
