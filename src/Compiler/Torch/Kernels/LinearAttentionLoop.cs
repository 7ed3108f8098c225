using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>
/// Causal linear attention with a complex decay gamma e^(i theta) as its recurrent form, fused over time, per batch row
/// and head: S_t = gamma e^(i theta) S_{t-1} + k_t v_t^T ([key, value], kept as (re, im)), y_t = q_t^T Re S_t. q, k:
/// [B, T, H key]; v, y: [B, T, H value], contiguous (q and k already through the feature map). Parallel over batch rows
/// and heads. A real decay runs on <see cref="GatedLinearAttentionLoop"/>.
/// </summary>
internal static unsafe class LinearAttentionLoop
{
    public readonly record struct Shape(int Batch, int Time, int Heads, int Key, int Value);

    /// <summary>gamma e^(i theta) as (gamma cos theta, gamma sin theta).</summary>
    public readonly record struct Rotation<T>(T Real, T Imaginary);

    public static void Run<T>(T* q, T* k, T* v, Rotation<T> rotation, T* y, Shape shape) where T : unmanaged, INumber<T> =>
        HeadPairs.Run(shape.Batch, shape.Heads, (long)shape.Time * shape.Key * shape.Value,
            (b, h) => RunHead(q, k, v, rotation, y, shape, b, h));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunHead<T>(T* q, T* k, T* v, Rotation<T> rotation, T* y, Shape shape, int b, int h)
        where T : unmanaged, INumber<T>
    {
        int dk = shape.Key, dv = shape.Value;
        var memory = new T[2 * dk * dv];
        fixed (T* s = memory)
            for (int t = 0; t < shape.Time; t++)
            {
                long step = (long)b * shape.Time + t;
                T* qt = q + (step * shape.Heads + h) * dk, kt = k + (step * shape.Heads + h) * dk;
                T* vt = v + (step * shape.Heads + h) * dv, yt = y + (step * shape.Heads + h) * dv;
                RecurrentAttentionStep.Rotate(s, s + dk * dv, rotation.Real, rotation.Imaginary, kt, vt, qt, yt, dk, dv, T.One, accumulate: false);
            }
    }
}
