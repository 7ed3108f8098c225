using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>
/// One step of attention's recurrent form on a state S[j, i] (key j, value i, stored at j width + i):
///   S[j, i] = a S[j, i] + k_j v_i,    y_i = c sum_j q_j S[j, i]    (y_i += ... when accumulating)
/// and with a complex eigenvalue a + i b, the imaginary parts I beside it: (S, I) = (a S - b I + k v, a I + b S),
/// y read from the real parts. Vectorised across i, so v and the sums stay in registers while the rows of S
/// stream through once. Fused attention (<see cref="LinearAttentionLoop"/>) and lowered heads
/// (<see cref="GatedLayerLoop"/>, which stores their neurons transposed to this layout) both run it.
/// </summary>
internal static unsafe class RecurrentAttentionStep
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Advance<T>(T* s, T a, T* k, T* v, T* q, T* y, int keys, int width, T c, bool accumulate)
        where T : unmanaged, INumber<T>
    {
        int i = 0;
        Vector<T> va = new(a), vc = new(c);
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
        {
            var vi = Vector.Load(v + i);
            var sum = Vector<T>.Zero;
            for (int j = 0; j < keys; j++)
            {
                T* cell = s + j * width + i;
                var updated = va * Vector.Load(cell) + new Vector<T>(k[j]) * vi;
                Vector.Store(updated, cell);
                sum += new Vector<T>(q[j]) * updated;
            }
            Vector.Store((accumulate ? Vector.Load(y + i) : Vector<T>.Zero) + vc * sum, y + i);
        }
        for (; i < width; i++)
        {
            var sum = T.Zero;
            for (int j = 0; j < keys; j++)
            {
                T* cell = s + j * width + i;
                *cell = a * *cell + k[j] * v[i];
                sum += q[j] * *cell;
            }
            y[i] = (accumulate ? y[i] : T.Zero) + c * sum;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Rotate<T>(T* s, T* imaginary, T a, T b, T* k, T* v, T* q, T* y, int keys, int width, T c, bool accumulate)
        where T : unmanaged, INumber<T>
    {
        int i = 0;
        Vector<T> va = new(a), vb = new(b), vc = new(c);
        for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
        {
            var vi = Vector.Load(v + i);
            var sum = Vector<T>.Zero;
            for (int j = 0; j < keys; j++)
            {
                T* re = s + j * width + i, im = imaginary + j * width + i;
                Vector<T> x = Vector.Load(re), z = Vector.Load(im);
                var updated = va * x - vb * z + new Vector<T>(k[j]) * vi;
                Vector.Store(updated, re);
                Vector.Store(va * z + vb * x, im);
                sum += new Vector<T>(q[j]) * updated;
            }
            Vector.Store((accumulate ? Vector.Load(y + i) : Vector<T>.Zero) + vc * sum, y + i);
        }
        for (; i < width; i++)
        {
            var sum = T.Zero;
            for (int j = 0; j < keys; j++)
            {
                T* re = s + j * width + i, im = imaginary + j * width + i;
                var (x, z) = (*re, *im);
                *re = a * x - b * z + k[j] * v[i];
                *im = a * z + b * x;
                sum += q[j] * *re;
            }
            y[i] = (accumulate ? y[i] : T.Zero) + c * sum;
        }
    }
}
