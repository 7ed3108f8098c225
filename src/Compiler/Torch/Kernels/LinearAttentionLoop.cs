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
    public readonly record struct Shape(int Batch, int Time, int Heads, int Key, int Value);

    /// <summary>gamma e^(i theta) as (gamma cos theta, gamma sin theta).</summary>
    public readonly record struct Rotation<T>(T Real, T Imaginary);

    public static void Run<T>(T* q, T* k, T* v, T* decay, T gamma, Rotation<T>? rotation, T* y, Shape shape) where T : unmanaged, INumber<T> =>
        HeadPairs.Run(shape.Batch, shape.Heads, (long)shape.Time * shape.Key * shape.Value,
            (b, h) => RunHead(q, k, v, decay, gamma, rotation, y, shape, b, h));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunHead<T>(T* q, T* k, T* v, T* decay, T gamma, Rotation<T>? rotation, T* y, Shape shape, int b, int h)
        where T : unmanaged, INumber<T>
    {
        int dk = shape.Key, dv = shape.Value;
        if (rotation is null)
        {
            RunRealHead(q, k, v, decay, gamma, y, shape, b, h);
            return;
        }
        var memory = new T[2 * dk * dv];
        fixed (T* s = memory)
            for (int t = 0; t < shape.Time; t++)
            {
                long step = (long)b * shape.Time + t;
                T* qt = q + (step * shape.Heads + h) * dk, kt = k + (step * shape.Heads + h) * dk;
                T* vt = v + (step * shape.Heads + h) * dv, yt = y + (step * shape.Heads + h) * dv;
                var r = rotation.Value;
                RecurrentAttentionStep.Rotate(s, s + dk * dv, r.Real, r.Imaginary, kt, vt, qt, yt, dk, dv, T.One, accumulate: false);
            }
    }

    /// <summary>
    /// A real decay, four steps per pass over the state (<see cref="GatedLinearAttentionLoop.Advance"/>); a step past the
    /// end reads a = 1 and k = q = v = 0 and writes into a sink, leaving the state as it is.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunRealHead<T>(T* q, T* k, T* v, T* decay, T gamma, T* y, Shape shape, int b, int h) where T : unmanaged, INumber<T>
    {
        const int steps = GatedLinearAttentionLoop.Steps;
        int dk = shape.Key, dv = shape.Value;
        var (memory, keys, blank, sink) = (new T[dk * dv], new T[steps * dk], new T[Math.Max(dk, dv)], new T[dv]);
        var factors = stackalloc T[steps];
        var rows = stackalloc nint[3 * steps];
        fixed (T* s = memory, scratch = keys, zero = blank, discard = sink)
            for (int start = 0; start < shape.Time; start += steps)
            {
                for (int u = 0; u < steps; u++)
                {
                    int t = start + u;
                    if (t >= shape.Time)
                    {
                        factors[u] = T.One;
                        new Span<T>(scratch + u * dk, dk).Clear();
                        (rows[u], rows[steps + u], rows[2 * steps + u]) = ((nint)zero, (nint)zero, (nint)discard);
                        continue;
                    }
                    long row = ((long)b * shape.Time + t) * shape.Heads + h;
                    factors[u] = decay is null ? gamma : decay[row];
                    new ReadOnlySpan<T>(k + row * dk, dk).CopyTo(new Span<T>(scratch + u * dk, dk));
                    (rows[u], rows[steps + u], rows[2 * steps + u]) = ((nint)(q + row * dk), (nint)(v + row * dv), (nint)(y + row * dv));
                }
                GatedLinearAttentionLoop.Advance(s, new GatedLinearAttentionLoop.Uniform<T>(factors[0], factors[1], factors[2], factors[3]), scratch,
                    (T**)rows, (T**)(rows + steps), (T**)(rows + 2 * steps), dk, dv);
            }
    }
}
