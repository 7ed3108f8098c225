using System.Numerics;
using System.Runtime.CompilerServices;

namespace Duality.Kernels;

/// <summary>Where a scan's eigenvalues come from: one per channel, one per (batch, step, channel), or one per (batch, step).</summary>
internal enum LambdaLayout { PerChannel, PerStep, PerStepShared }

/// <summary>
/// Diagonal linear scans over raw storage, sequences laid out [batch, time, width] row-major.
/// Work is split into (batch, channel block) items run in parallel; within an item the loop runs
/// over time, and over channels with SIMD vectors.
///   real:     h_t = l_t * h_{t-1} + u_t
///   complex:  (re, im)_t = (lr re - li im + u, li re + lr im)_{t-1}, re and im stored as [.., 0:N] and [.., N:2N]
/// Backward passes are the reverse scans a_t = g_t + l_{t+1} a_{t+1} (J^T for complex).
/// </summary>
internal static unsafe class ScanLoops
{
    private const int Block = 256;

    public static void Parallel(int batch, int width, Action<int, int, int> item)
    {
        int blocks = (width + Block - 1) / Block;
        System.Threading.Tasks.Parallel.For(0, batch * blocks, i =>
        {
            int b = i / blocks, n0 = i % blocks * Block;
            item(b, n0, Math.Min(n0 + Block, width));
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T* LambdaRow<T>(T* lambda, LambdaLayout layout, int b, int t, int time, int width) where T : unmanaged =>
        layout switch
        {
            LambdaLayout.PerChannel => lambda,
            LambdaLayout.PerStep => lambda + ((long)b * time + t) * width,
            _ => lambda + ((long)b * time + t),
        };

    /// <summary>h = scan(u) for one item: channels [n0, n1) of batch element b.</summary>
    public static void RealForward<T>(T* u, T* lambda, LambdaLayout layout, T* h0, T* h, int b, int n0, int n1, int time, int width)
        where T : unmanaged, INumber<T>
    {
        long offset = (long)b * time * width;
        for (int t = 0; t < time; t++)
        {
            T* ut = u + offset + (long)t * width, ht = h + offset + (long)t * width, hp = ht - width;
            T* lt = LambdaRow(lambda, layout, b, t, time, width);
            int n = n0;
            if (t == 0)
            {
                for (; n < n1; n++) ht[n] = (h0 == null ? T.Zero : Lambda(lt, layout, n) * h0[n]) + ut[n];
                continue;
            }
            if (layout == LambdaLayout.PerStepShared)
            {
                var shared = new Vector<T>(lt[0]);
                for (; n <= n1 - Vector<T>.Count; n += Vector<T>.Count)
                    Vector.Store(shared * Vector.Load(hp + n) + Vector.Load(ut + n), ht + n);
            }
            else
                for (; n <= n1 - Vector<T>.Count; n += Vector<T>.Count)
                    Vector.Store(Vector.Load(lt + n) * Vector.Load(hp + n) + Vector.Load(ut + n), ht + n);
            for (; n < n1; n++) ht[n] = Lambda(lt, layout, n) * hp[n] + ut[n];
        }
    }

    /// <summary>
    /// The reverse scan a_t = g_t + l_{t+1} a_{t+1} into du, and the eigenvalue gradient: dl_t = a_t h_{t-1}
    /// into dLambda ([B, T, N] for per-step layouts; accumulated over time into this item's [N] row otherwise),
    /// and dh0 += l_0 a_0 into this item's row.
    /// </summary>
    public static void RealBackward<T>(T* g, T* lambda, LambdaLayout layout, T* h0, T* h, T* du, T* dLambda, T* dh0,
        int b, int n0, int n1, int time, int width) where T : unmanaged, INumber<T>
    {
        long offset = (long)b * time * width;
        bool perStep = layout != LambdaLayout.PerChannel;
        for (int t = time - 1; t >= 0; t--)
        {
            T* gt = g + offset + (long)t * width, at = du + offset + (long)t * width, an = at + width;
            T* hp = t > 0 ? h + offset + (long)(t - 1) * width : h0;
            T* ln = t < time - 1 ? LambdaRow(lambda, layout, b, t + 1, time, width) : null;
            T* dl = perStep ? dLambda + offset + (long)t * width : dLambda;
            int n = n0;
            if (ln != null && layout != LambdaLayout.PerStepShared)
                for (; n <= n1 - Vector<T>.Count; n += Vector<T>.Count)
                {
                    var a = Vector.Load(gt + n) + Vector.Load(ln + n) * Vector.Load(an + n);
                    Vector.Store(a, at + n);
                    if (hp != null)
                        Vector.Store(perStep ? a * Vector.Load(hp + n) : Vector.Load(dl + n) + a * Vector.Load(hp + n), dl + n);
                }
            for (; n < n1; n++)
            {
                var a = gt[n] + (ln == null ? T.Zero : Lambda(ln, layout, n) * an[n]);
                at[n] = a;
                if (hp != null) dl[n] = perStep ? a * hp[n] : dl[n] + a * hp[n];
                else if (perStep) dl[n] = T.Zero;
            }
        }
        if (dh0 != null)
        {
            T* l0 = LambdaRow(lambda, layout, b, 0, time, width);
            for (int n = n0; n < n1; n++) dh0[n] += Lambda(l0, layout, n) * du[offset + n];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Lambda<T>(T* row, LambdaLayout layout, int n) where T : unmanaged =>
        layout == LambdaLayout.PerStepShared ? row[0] : row[n];

    /// <summary>Complex forward for one item; h: [B, T, 2N] with re in [0, N) and im in [N, 2N).</summary>
    public static void ComplexForward<T>(T* u, T* lre, T* lim, T* h0re, T* h0im, T* h, int b, int n0, int n1, int time, int width)
        where T : unmanaged, INumber<T>
    {
        long inOffset = (long)b * time * width, outOffset = (long)b * time * 2 * width;
        for (int t = 0; t < time; t++)
        {
            T* ut = u + inOffset + (long)t * width;
            T* re = h + outOffset + (long)t * 2 * width, im = re + width;
            T* pre = t > 0 ? re - 2 * width : h0re, pim = t > 0 ? im - 2 * width : h0im;
            int n = n0;
            if (pre != null)
                for (; n <= n1 - Vector<T>.Count; n += Vector<T>.Count)
                {
                    Vector<T> a = Vector.Load(lre + n), c = Vector.Load(lim + n), r = Vector.Load(pre + n), i = Vector.Load(pim + n);
                    Vector.Store(a * r - c * i + Vector.Load(ut + n), re + n);
                    Vector.Store(c * r + a * i, im + n);
                }
            for (; n < n1; n++)
            {
                T r = pre == null ? T.Zero : pre[n], i = pim == null ? T.Zero : pim[n];
                re[n] = lre[n] * r - lim[n] * i + ut[n];
                im[n] = lim[n] * r + lre[n] * i;
            }
        }
    }

    /// <summary>
    /// Complex backward for one item: adjoints (ar, ai)_t = g_t + J^T (ar, ai)_{t+1}, J^T = [[lr, li], [-li, lr]],
    /// written to a [B, T, 2N]; du = ar; dlr += ar re_{t-1} + ai im_{t-1}; dli += ai re_{t-1} - ar im_{t-1};
    /// dh0 += J^T a_0 (rows of this item).
    /// </summary>
    public static void ComplexBackward<T>(T* g, T* lre, T* lim, T* h0re, T* h0im, T* h, T* adjoint, T* dlre, T* dlim,
        T* dh0re, T* dh0im, int b, int n0, int n1, int time, int width) where T : unmanaged, INumber<T>
    {
        long offset = (long)b * time * 2 * width;
        for (int t = time - 1; t >= 0; t--)
        {
            T* gr = g + offset + (long)t * 2 * width, gi = gr + width;
            T* ar = adjoint + offset + (long)t * 2 * width, ai = ar + width;
            T* pre = t > 0 ? h + offset + (long)(t - 1) * 2 * width : h0re;
            T* pim = t > 0 ? pre + width : h0im;
            bool last = t == time - 1;
            for (int n = n0; n < n1; n++)
            {
                T nr = last ? T.Zero : ar[n + 2 * width], ni = last ? T.Zero : ai[n + 2 * width];
                T r = gr[n] + lre[n] * nr + lim[n] * ni, i = gi[n] - lim[n] * nr + lre[n] * ni;
                ar[n] = r;
                ai[n] = i;
                if (pre != null)
                {
                    dlre[n] += r * pre[n] + i * pim[n];
                    dlim[n] += i * pre[n] - r * pim[n];
                }
            }
        }
        if (dh0re != null)
            for (int n = n0; n < n1; n++)
            {
                T r = adjoint[offset + n], i = adjoint[offset + width + n];
                dh0re[n] += lre[n] * r + lim[n] * i;
                dh0im[n] += lre[n] * i - lim[n] * r;
            }
    }
}
