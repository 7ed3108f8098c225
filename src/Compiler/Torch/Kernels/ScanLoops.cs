using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace Duality.Kernels;

/// <summary>Where a scan's eigenvalues come from: one per channel, one per (batch, step, channel), or one per (batch, step).</summary>
internal enum LambdaLayout { PerChannel, PerStep, PerStepShared }

/// <summary>Channels [Start, End) of batch element Batch; Block numbers the slice within its row.</summary>
internal readonly record struct ScanItem(int Batch, int Start, int End, int Block)
{
    public int Count => End - Start;
}

/// <summary>
/// How a [batch, time, width] scan is cut into items that run in parallel: whole rows when the batch
/// alone keeps the cores busy, narrower blocks otherwise. Block widths are multiples of 16 channels,
/// so blocks start as aligned as their rows, and at most 4096, so an item's running state fits on its stack.
/// </summary>
internal readonly record struct ScanPartition(int Batch, int Width, int BlockWidth)
{
    /// <summary>The narrowest block a row is cut into to give every core work (narrower revisits every page too often).</summary>
    public const int MinBlock = 256;

    /// <summary>The widest block, whatever the batch: an item's running state (MaxBlock values) lives on its stack.</summary>
    public const int MaxBlock = 4096;

    /// <summary>Block widths are multiples of this many channels, so blocks start as aligned as their rows.</summary>
    public const int Alignment = 16;

    public int Blocks => (Width + BlockWidth - 1) / BlockWidth;

    public static ScanPartition For(int batch, int width)
    {
        int itemsWanted = 2 * Environment.ProcessorCount;
        int blocks = Math.Max(1, Math.Max(Ceiling(width, MaxBlock), Math.Min(Ceiling(itemsWanted, Math.Max(batch, 1)), Ceiling(width, MinBlock))));
        return new(batch, width, Math.Max(Alignment, Ceiling(Ceiling(width, blocks), Alignment) * Alignment));
    }

    public void Run(Action<ScanItem> work)
    {
        int blocks = Blocks, width = Width, blockWidth = BlockWidth;
        KernelTeam.For(Batch * blocks, i =>
        {
            int block = i % blocks, start = block * blockWidth;
            work(new ScanItem(i / blocks, start, Math.Min(start + blockWidth, width), block));
        });
    }

    private static int Ceiling(int value, int divisor) => (value + divisor - 1) / divisor;
}

/// <summary>
/// Stores that bypass the caches, for outputs much larger than them: the written lines are neither
/// read first nor left to evict the inputs. They need vector-aligned rows.
/// </summary>
internal static unsafe class StreamingStores
{
    /// <summary>
    /// Output size (bytes) from which stores bypass the caches. Settable so that a law can run the streaming stores on
    /// small tensors (restoring it after); nothing else sets it.
    /// </summary>
    internal static long MinBytes = 16L << 20;

    public static bool Suit<T>(T* rows, int rowLength, long elements) where T : unmanaged =>
        Sse.IsSupported && elements * sizeof(T) >= MinBytes &&
        (nuint)rows % (nuint)Vector<byte>.Count == 0 && rowLength * sizeof(T) % Vector<byte>.Count == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store<T>(Vector<T> value, T* destination, bool streaming) where T : unmanaged
    {
        if (streaming) Vector.StoreAlignedNonTemporal(value, destination);
        else Vector.Store(value, destination);
    }

    /// <summary>Makes this thread's streaming stores visible before the item is reported done.</summary>
    public static void Fence(bool streaming)
    {
        if (streaming) Sse.StoreFence();
    }
}

/// <summary>Rows of [batch, time, width] sequences and of the eigenvalues in each <see cref="LambdaLayout"/>.</summary>
internal static unsafe class ScanRows
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Offset(int b, int t, int time, int width) => ((long)b * time + t) * width;

    /// <summary>The eigenvalues of step t from channel <paramref name="start"/> on (the one shared value for <see cref="LambdaLayout.PerStepShared"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T* Lambda<T>(T* lambda, LambdaLayout layout, int b, int t, int time, int width, int start) where T : unmanaged =>
        layout switch
        {
            LambdaLayout.PerChannel => lambda + start,
            LambdaLayout.PerStep => lambda + Offset(b, t, time, width) + start,
            _ => lambda + ((long)b * time + t),
        };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> LambdaVector<T>(T* row, LambdaLayout layout, int n) where T : unmanaged =>
        layout == LambdaLayout.PerStepShared ? new Vector<T>(row[0]) : Vector.Load(row + n);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T LambdaAt<T>(T* row, LambdaLayout layout, int n) where T : unmanaged =>
        layout == LambdaLayout.PerStepShared ? row[0] : row[n];
}

/// <summary>
/// The forward scan h_t = lambda_t h_{t-1} + u_t over [batch, time, width] rows, h_{-1} = initial ([width]) or zero.
/// Each item keeps its running state on its stack, reads u once and writes h once.
/// </summary>
internal readonly unsafe struct RealForwardScan<T>(T* input, T* lambda, LambdaLayout layout, T* initial, T* states, int time, int width, bool streaming)
    where T : unmanaged, INumber<T>
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Run(ScanItem item)
    {
        int count = item.Count;
        T* state = stackalloc T[count];
        for (int n = 0; n < count; n++) state[n] = initial == null ? T.Zero : initial[item.Start + n];
        for (int t = 0; t < time; t++)
        {
            long row = ScanRows.Offset(item.Batch, t, time, width) + item.Start;
            Step(state, input + row, states + row, ScanRows.Lambda(lambda, layout, item.Batch, t, time, width, item.Start), count);
        }
        StreamingStores.Fence(streaming);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Step(T* state, T* u, T* h, T* l, int count)
    {
        int n = 0;
        for (; n <= count - Vector<T>.Count; n += Vector<T>.Count)
        {
            var next = ScanRows.LambdaVector(l, layout, n) * Vector.Load(state + n) + Vector.Load(u + n);
            Vector.Store(next, state + n);
            StreamingStores.Store(next, h + n, streaming);
        }
        for (; n < count; n++) h[n] = state[n] = ScanRows.LambdaAt(l, layout, n) * state[n] + u[n];
    }
}

/// <summary>
/// The reverse scan of <see cref="RealForwardScan{T}"/>: adjoints a_t = g_t + lambda_{t+1} a_{t+1} are the
/// input gradient; the eigenvalue gradient a_t h_{t-1} is formed in the same pass and written per layout:
/// summed over time into lambdaGradient [batch, width] (per channel), stored as [batch, time, width] (per
/// step), or summed over this item's channels into [batch, time, blocks] (shared per step); null skips it,
/// and with it every read of h. initialGradient [batch, width] receives lambda_0 a_0, or is null. The
/// gradient g is [batch, time, width], or [batch, time] when it is the same for every channel.
/// </summary>
internal readonly unsafe struct RealBackwardScan<T>(
    T* gradient, bool channelBroadcast, T* lambda, LambdaLayout layout, T* initial, T* states,
    T* inputGradient, T* lambdaGradient, T* initialGradient, int time, int width, int blocks, bool streaming)
    where T : unmanaged, INumber<T>
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Run(ScanItem item)
    {
        int count = item.Count;
        bool perChannel = layout == LambdaLayout.PerChannel && lambdaGradient != null;
        T* adjoint = stackalloc T[count];
        T* timeSum = stackalloc T[perChannel ? count : 0];
        new Span<T>(timeSum, perChannel ? count : 0).Clear();
        for (int t = time - 1; t >= 0; t--)
        {
            long row = ScanRows.Offset(item.Batch, t, time, width) + item.Start;
            T* g = channelBroadcast ? gradient + ((long)item.Batch * time + t) : gradient + row;
            T* next = t + 1 < time ? ScanRows.Lambda(lambda, layout, item.Batch, t + 1, time, width, item.Start) : null;
            T* previous = lambdaGradient == null ? null : t > 0 ? states + row - width : initial == null ? null : initial + item.Start;
            T* products = lambdaGradient == null ? null : layout switch
            {
                LambdaLayout.PerChannel => timeSum,
                LambdaLayout.PerStep => lambdaGradient + row,
                _ => null,
            };
            var dot = Step(adjoint, g, next, inputGradient + row, previous, t > 1 ? previous - width : null, products, count);
            if (layout == LambdaLayout.PerStepShared && lambdaGradient != null)
                lambdaGradient[((long)item.Batch * time + t) * blocks + item.Block] = dot;
        }
        if (perChannel) new Span<T>(timeSum, count).CopyTo(new Span<T>(lambdaGradient + (long)item.Batch * width + item.Start, count));
        if (initialGradient != null && time > 0)
        {
            T* first = ScanRows.Lambda(lambda, layout, item.Batch, 0, time, width, item.Start);
            for (int n = 0; n < count; n++) initialGradient[(long)item.Batch * width + item.Start + n] = ScanRows.LambdaAt(first, layout, n) * adjoint[n];
        }
        StreamingStores.Fence(streaming);
    }

    /// <summary>
    /// One step back: the adjoint row into adjoint and du, and its products with h_{t-1} (previous, null for
    /// zero): added to products (per channel), stored to products (per step) or summed and returned (shared).
    /// The row the next step reads (ahead) is prefetched, the rows being visited in descending order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private T Step(T* adjoint, T* g, T* next, T* du, T* previous, T* ahead, T* products, int count)
    {
        var sum = Vector<T>.Zero;
        int n = 0;
        for (; n <= count - Vector<T>.Count; n += Vector<T>.Count)
        {
            var a = channelBroadcast ? new Vector<T>(g[0]) : Vector.Load(g + n);
            if (next != null) a += ScanRows.LambdaVector(next, layout, n) * Vector.Load(adjoint + n);
            Vector.Store(a, adjoint + n);
            StreamingStores.Store(a, du + n, streaming);
            var product = previous == null ? Vector<T>.Zero : a * Vector.Load(previous + n);
            if (ahead != null && Sse.IsSupported) Sse.Prefetch0(ahead + n);
            if (layout == LambdaLayout.PerChannel) { if (products != null) Vector.Store(Vector.Load(products + n) + product, products + n); }
            else if (layout == LambdaLayout.PerStep) { if (products != null) StreamingStores.Store(product, products + n, streaming); }
            else sum += product;
        }
        var total = Vector.Sum(sum);
        for (; n < count; n++)
        {
            var a = channelBroadcast ? g[0] : g[n];
            if (next != null) a += ScanRows.LambdaAt(next, layout, n) * adjoint[n];
            du[n] = adjoint[n] = a;
            var product = previous == null ? T.Zero : a * previous[n];
            if (products == null) total += product;
            else if (layout == LambdaLayout.PerChannel) products[n] += product;
            else products[n] = product;
        }
        return total;
    }
}

/// <summary>
/// The complex diagonal scan over raw storage, re and im stored as [.., 0:N] and [.., N:2N]:
///   (re, im)_t = (lr re - li im + u, li re + lr im)_{t-1}
/// Backward passes are the reverse scans a_t = g_t + J^T a_{t+1}.
/// </summary>
internal static unsafe class ScanLoops
{
    /// <summary>
    /// Complex forward for one item; h: [B, T, 2N] with re in [0, N) and im in [N, 2N). Its input u_t is real ([B, T, N])
    /// or, with <paramref name="complexInput"/>, complex ([B, T, 2N] as [re; im]), scaled per channel by
    /// <paramref name="gain"/> when given: (re, im)_t = lambda (re, im)_{t-1} + gain u_t.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ComplexForward<T>(T* u, bool complexInput, T* gain, T* lre, T* lim, T* h0re, T* h0im, T* h, ScanItem item, int time, int width)
        where T : unmanaged, INumber<T>
    {
        int b = item.Batch, n0 = item.Start, n1 = item.End, inWidth = complexInput ? 2 * width : width;
        long inOffset = (long)b * time * inWidth, outOffset = (long)b * time * 2 * width;
        for (int t = 0; t < time; t++)
        {
            T* ut = u + inOffset + (long)t * inWidth, vt = complexInput ? ut + width : null;
            T* re = h + outOffset + (long)t * 2 * width, im = re + width;
            T* pre = t > 0 ? re - 2 * width : h0re, pim = t > 0 ? im - 2 * width : h0im;
            int n = n0;
            if (pre != null)
                for (; n <= n1 - Vector<T>.Count; n += Vector<T>.Count)
                {
                    Vector<T> a = Vector.Load(lre + n), c = Vector.Load(lim + n), r = Vector.Load(pre + n), i = Vector.Load(pim + n);
                    var g = gain == null ? Vector<T>.One : Vector.Load(gain + n);
                    Vector.Store(a * r - c * i + g * Vector.Load(ut + n), re + n);
                    Vector.Store(vt == null ? c * r + a * i : c * r + a * i + g * Vector.Load(vt + n), im + n);
                }
            for (; n < n1; n++)
            {
                T r = pre == null ? T.Zero : pre[n], i = pim == null ? T.Zero : pim[n], g = gain == null ? T.One : gain[n];
                re[n] = lre[n] * r - lim[n] * i + g * ut[n];
                im[n] = vt == null ? lim[n] * r + lre[n] * i : lim[n] * r + lre[n] * i + g * vt[n];
            }
        }
    }

    /// <summary>
    /// Complex backward for one item: adjoints (ar, ai)_t = g_t + J^T (ar, ai)_{t+1}, J^T = [[lr, li], [-li, lr]],
    /// carried on the stack; du = gain ar, written to [B, T, N], or with <paramref name="complexInput"/> du = gain (ar, ai)
    /// written to [B, T, 2N]; dgain += ar u_re (+ ai u_im) (u and dgain needed only with a gain);
    /// dlr += ar re_{t-1} + ai im_{t-1}; dli += ai re_{t-1} - ar im_{t-1}; dh0 += J^T a_0 (rows of this item).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ComplexBackward<T>(T* g, bool complexInput, T* gain, T* u, T* dgain, T* lre, T* lim, T* h0re, T* h0im, T* h, T* du,
        T* dlre, T* dlim, T* dh0re, T* dh0im, ScanItem item, int time, int width) where T : unmanaged, INumber<T>
    {
        int b = item.Batch, n0 = item.Start, n1 = item.End, count = item.Count;
        T* carryRe = stackalloc T[count], carryIm = stackalloc T[count];
        new Span<T>(carryRe, count).Clear();
        new Span<T>(carryIm, count).Clear();
        T* cr = carryRe - n0, ci = carryIm - n0;
        long offset = (long)b * time * 2 * width;
        for (int t = time - 1; t >= 0; t--)
        {
            T* gr = g + offset + (long)t * 2 * width, gi = gr + width;
            T* d = du + ((long)b * time + t) * (complexInput ? 2 * width : width), di = complexInput ? d + width : null;
            T* ur = u == null ? null : u + ((long)b * time + t) * (complexInput ? 2 * width : width), ui = ur == null || !complexInput ? null : ur + width;
            T* pre = t > 0 ? h + offset + (long)(t - 1) * 2 * width : h0re;
            T* pim = t > 0 ? pre + width : h0im;
            int n = n0;
            for (; n <= n1 - Vector<T>.Count; n += Vector<T>.Count)
            {
                Vector<T> a = Vector.Load(lre + n), c = Vector.Load(lim + n), nr = Vector.Load(cr + n), ni = Vector.Load(ci + n);
                Vector<T> r = Vector.Load(gr + n) + a * nr + c * ni, i = Vector.Load(gi + n) - c * nr + a * ni;
                Vector.Store(r, cr + n);
                Vector.Store(i, ci + n);
                var gn = gain == null ? Vector<T>.One : Vector.Load(gain + n);
                Vector.Store(gn * r, d + n);
                if (di != null) Vector.Store(gn * i, di + n);
                if (dgain != null)
                    Vector.Store(Vector.Load(dgain + n) + r * Vector.Load(ur + n) + (ui == null ? Vector<T>.Zero : i * Vector.Load(ui + n)), dgain + n);
                if (pre != null)
                {
                    Vector<T> hr = Vector.Load(pre + n), hi = Vector.Load(pim + n);
                    Vector.Store(Vector.Load(dlre + n) + r * hr + i * hi, dlre + n);
                    Vector.Store(Vector.Load(dlim + n) + i * hr - r * hi, dlim + n);
                }
            }
            for (; n < n1; n++)
            {
                T r = gr[n] + lre[n] * cr[n] + lim[n] * ci[n], i = gi[n] - lim[n] * cr[n] + lre[n] * ci[n];
                cr[n] = r;
                ci[n] = i;
                T gn = gain == null ? T.One : gain[n];
                d[n] = gn * r;
                if (di != null) di[n] = gn * i;
                if (dgain != null) dgain[n] += r * ur[n] + (ui == null ? T.Zero : i * ui[n]);
                if (pre != null)
                {
                    dlre[n] += r * pre[n] + i * pim[n];
                    dlim[n] += i * pre[n] - r * pim[n];
                }
            }
        }
        if (dh0re != null && time > 0)
            for (int n = n0; n < n1; n++)
            {
                dh0re[n] += lre[n] * cr[n] + lim[n] * ci[n];
                dh0im[n] += lre[n] * ci[n] - lim[n] * cr[n];
            }
    }
}
