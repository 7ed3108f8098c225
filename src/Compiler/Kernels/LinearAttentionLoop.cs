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

    public static void Run<T>(T* q, T* k, T* v, T* decay, T gamma, Rotation<T>? rotation, T* y, Shape shape) where T : unmanaged, INumber<T>
    {
        var pairs = shape.Batch * shape.Heads;
        if (pairs > 1 && (long)shape.Time * shape.Key * shape.Value >= 1 << 14)
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
                if (rotation is { } r) Rotate(s, s + dk * dv, r, kt, vt, qt, yt, dk, dv);
                else Advance(s, decay is null ? gamma : decay[step * shape.Heads + h], kt, vt, qt, yt, dk, dv);
            }
    }

    /// <summary>(re, im)[j, :] = (c re - s im + k_j v, c im + s re) and y = sum_j q_j re[j, :], for c + i s = gamma e^(i theta).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rotate<T>(T* re, T* im, Rotation<T> rotation, T* k, T* v, T* q, T* y, int dk, int dv) where T : unmanaged, INumber<T>
    {
        int i = 0;
        Vector<T> c = new(rotation.Real), s = new(rotation.Imaginary);
        for (; i <= dv - Vector<T>.Count; i += Vector<T>.Count)
        {
            var vi = Vector.Load(v + i);
            var sum = Vector<T>.Zero;
            for (int j = 0; j < dk; j++)
            {
                T* real = re + j * dv + i, imaginary = im + j * dv + i;
                Vector<T> a = Vector.Load(real), b = Vector.Load(imaginary);
                var updated = c * a - s * b + new Vector<T>(k[j]) * vi;
                Vector.Store(updated, real);
                Vector.Store(c * b + s * a, imaginary);
                sum += new Vector<T>(q[j]) * updated;
            }
            Vector.Store(sum, y + i);
        }
        for (; i < dv; i++)
        {
            var sum = T.Zero;
            for (int j = 0; j < dk; j++)
            {
                T* real = re + j * dv + i, imaginary = im + j * dv + i;
                var (a, b) = (*real, *imaginary);
                *real = rotation.Real * a - rotation.Imaginary * b + k[j] * v[i];
                *imaginary = rotation.Real * b + rotation.Imaginary * a;
                sum += q[j] * *real;
            }
            y[i] = sum;
        }
    }

    /// <summary>
    /// S[j, :] = a S[j, :] + k_j v and y = sum_j q_j S[j, :], one vector of values at a time so that v and
    /// the sum stay in registers while the rows of S stream through once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Advance<T>(T* s, T a, T* k, T* v, T* q, T* y, int dk, int dv) where T : unmanaged, INumber<T>
    {
        int i = 0;
        var va = new Vector<T>(a);
        for (; i <= dv - Vector<T>.Count; i += Vector<T>.Count)
        {
            var vi = Vector.Load(v + i);
            var sum = Vector<T>.Zero;
            for (int j = 0; j < dk; j++)
            {
                T* row = s + j * dv + i;
                var updated = va * Vector.Load(row) + new Vector<T>(k[j]) * vi;
                Vector.Store(updated, row);
                sum += new Vector<T>(q[j]) * updated;
            }
            Vector.Store(sum, y + i);
        }
        for (; i < dv; i++)
        {
            var sum = T.Zero;
            for (int j = 0; j < dk; j++)
            {
                T* cell = s + j * dv + i;
                *cell = a * *cell + k[j] * v[i];
                sum += q[j] * *cell;
            }
            y[i] = sum;
        }
    }
}
