using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>
/// Causal linear attention as its recurrent form, fused over time, per batch row and head:
///   S_t = a_t S_{t-1} + k_t v_t^T   ([key, value]),   y_t = q_t^T S_t
/// with a_t = gamma, or decay[b, t, h] when given; a complex decay gamma e^(i theta) (rotation != null:
/// gamma cos theta, gamma sin theta) keeps S as (re, im) and reads y_t = q_t^T Re S_t. q, k: [B, T, H key];
/// v, y: [B, T, H value], contiguous (q and k already through the feature map). Parallel over batch rows and heads.
/// </summary>
internal static unsafe class LinearAttentionLoop
{
    /// <summary>
    /// Work per (batch row, head) pair (steps x key x value) from which two or more pairs run in parallel, one task per
    /// pair: below it, starting the tasks costs more than the loop saves.
    /// </summary>
    public const int ParallelWork = 1 << 14;

    public readonly record struct Shape(int Batch, int Time, int Heads, int Key, int Value);

    /// <summary>gamma e^(i theta) as (gamma cos theta, gamma sin theta).</summary>
    public readonly record struct Rotation<T>(T Real, T Imaginary);

    public static void Run<T>(T* q, T* k, T* v, T* decay, T gamma, Rotation<T>? rotation, T* y, Shape shape) where T : unmanaged, INumber<T>
    {
        var pairs = shape.Batch * shape.Heads;
        if (pairs > 1 && (long)shape.Time * shape.Key * shape.Value >= ParallelWork)
            System.Threading.Tasks.Parallel.For(0, pairs, p => RunHead(q, k, v, decay, gamma, rotation, y, shape, p / shape.Heads, p % shape.Heads));
        else
            for (int p = 0; p < pairs; p++) RunHead(q, k, v, decay, gamma, rotation, y, shape, p / shape.Heads, p % shape.Heads);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunHead<T>(T* q, T* k, T* v, T* decay, T gamma, Rotation<T>? rotation, T* y, Shape shape, int b, int h)
        where T : unmanaged, INumber<T>
    {
        int dk = shape.Key, dv = shape.Value;
        var memory = new T[(rotation is null ? 1 : 2) * dk * dv];
        fixed (T* s = memory)
            for (int t = 0; t < shape.Time; t++)
            {
                long step = (long)b * shape.Time + t;
                T* qt = q + (step * shape.Heads + h) * dk, kt = k + (step * shape.Heads + h) * dk;
                T* vt = v + (step * shape.Heads + h) * dv, yt = y + (step * shape.Heads + h) * dv;
                if (rotation is { } r) RecurrentAttentionStep.Rotate(s, s + dk * dv, r.Real, r.Imaginary, kt, vt, qt, yt, dk, dv, T.One, accumulate: false);
                else RecurrentAttentionStep.Advance(s, decay is null ? gamma : decay[step * shape.Heads + h], kt, vt, qt, yt, dk, dv, T.One, accumulate: false);
            }
    }
}
