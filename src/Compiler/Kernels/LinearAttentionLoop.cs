using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>
/// Causal linear attention as its recurrent form, fused over time, per batch row and head:
///   S_t = a_t S_{t-1} + k_t v_t^T   ([key, value]),   y_t = q_t^T S_t
/// with a_t = gamma, or decay[b, t, h] when given. q, k: [B, T, H key]; v, y: [B, T, H value], contiguous
/// (q and k already through the feature map). Parallel over batch rows and heads.
/// </summary>
internal static unsafe class LinearAttentionLoop
{
    public readonly record struct Shape(int Batch, int Time, int Heads, int Key, int Value);

    public static void Run<T>(T* q, T* k, T* v, T* decay, T gamma, T* y, Shape shape) where T : unmanaged, INumber<T>
    {
        var pairs = shape.Batch * shape.Heads;
        if (pairs > 1 && (long)shape.Time * shape.Key * shape.Value >= 1 << 14)
            System.Threading.Tasks.Parallel.For(0, pairs, p => RunHead(q, k, v, decay, gamma, y, shape, p / shape.Heads, p % shape.Heads));
        else
            for (int p = 0; p < pairs; p++) RunHead(q, k, v, decay, gamma, y, shape, p / shape.Heads, p % shape.Heads);
    }

    private static void RunHead<T>(T* q, T* k, T* v, T* decay, T gamma, T* y, Shape shape, int b, int h) where T : unmanaged, INumber<T>
    {
        int dk = shape.Key, dv = shape.Value;
        var memory = new T[dk * dv];
        fixed (T* s = memory)
            for (int t = 0; t < shape.Time; t++)
            {
                long step = (long)b * shape.Time + t;
                var a = decay is null ? gamma : decay[step * shape.Heads + h];
                T* qt = q + (step * shape.Heads + h) * dk, kt = k + (step * shape.Heads + h) * dk;
                T* vt = v + (step * shape.Heads + h) * dv, yt = y + (step * shape.Heads + h) * dv;
                new Span<T>(yt, dv).Clear();
                for (int j = 0; j < dk; j++) UpdateAndRead(s + j * dv, a, kt[j], vt, qt[j], yt, dv);
            }
    }

    /// <summary>row = a row + kj v; y += qj row, over n values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UpdateAndRead<T>(T* row, T a, T kj, T* v, T qj, T* y, int n) where T : unmanaged, INumber<T>
    {
        int i = 0;
        if (n >= Vector<T>.Count)
        {
            Vector<T> va = new(a), vk = new(kj), vq = new(qj);
            for (; i <= n - Vector<T>.Count; i += Vector<T>.Count)
            {
                var updated = va * Vector.Load(row + i) + vk * Vector.Load(v + i);
                Vector.Store(updated, row + i);
                Vector.Store(Vector.Load(y + i) + vq * updated, y + i);
            }
        }
        for (; i < n; i++)
        {
            row[i] = a * row[i] + kj * v[i];
            y[i] += qj * row[i];
        }
    }
}
