using Duality.Execution;
using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// Causal depthwise convolution over time on contiguous rows, taps transposed so each is a vector over channels:
///   y_t = b + sum_{i &lt; K, i &lt;= t} tap_i * x_{t-i}                 (elementwise over C channels)
/// and its reverse-mode derivative
///   dx_s = sum_{i &lt; K, s + i &lt; T} tap_i * dy_{s+i},   dtap_i = sum_{n, t >= i} dy_t * x_{t-i},   db = sum_{n, t} dy_t.
/// x, y, dy, dx: [B, T, C]; taps, dtaps: [K, C]; b, db: [C] (b may be null). The loops are compiled optimised from their
/// first call (a tier-0 copy would run a script's first calls several times slower).
/// </summary>
internal static unsafe class CausalConvolution
{
    /// <summary>
    /// Rows x channels x taps from which a pass is split over the cores: into contiguous ranges of the B T rows, at most
    /// four per core; below it, one thread.
    /// </summary>
    public const long ParallelWork = 1 << 18;

    /// <summary>The ranges of rows [start, end) a pass over <paramref name="rows"/> rows is split into.</summary>
    private static (int Start, int End)[] Pieces(int rows, int channels, int kernel)
    {
        var count = (long)rows * channels * kernel < ParallelWork ? 1 : Math.Min(rows, 4 * Environment.ProcessorCount);
        return Enumerable.Range(0, count).Select(p => ((int)((long)rows * p / count), (int)((long)rows * (p + 1) / count))).ToArray();
    }

    public static void Forward<T>(T* x, T* taps, T* bias, T* y, int batch, int time, int channels, int kernel)
        where T : unmanaged, INumber<T>
    {
        var pieces = Pieces(batch * time, channels, kernel);
        if (pieces.Length == 1) ForwardRows(x, taps, bias, y, 0, batch * time, time, channels, kernel);
        else
        {
            var (px, pt, pb, py) = ((nint)x, (nint)taps, (nint)bias, (nint)y);
            KernelTeam.For(pieces.Length, p => ForwardRows((T*)px, (T*)pt, (T*)pb, (T*)py, pieces[p].Start, pieces[p].End, time, channels, kernel));
        }
    }

    /// <summary>Output rows [start, end) of the B T rows (row n T + t): the channels a vector holds through a window of
    /// registers when the taps fit one, the rest row by row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRows<T>(T* x, T* taps, T* bias, T* y, int start, int end, int time, int channels, int kernel)
        where T : unmanaged, INumber<T>
    {
        var windowed = WindowedChannels<T>(channels, kernel);
        foreach (var (first, last, sequence) in Sequences(start, end, time))
            for (int from = first; from < last; from += BlockRows)
                ForwardWindowed(x, taps, bias, y, from, Math.Min(from + BlockRows, last), sequence, channels, kernel, windowed);
        if (windowed < channels) ForwardColumns(x, taps, bias, y, start, end, time, channels, kernel, windowed);
    }

    /// <summary>
    /// Rows [from, to) of the sequence that starts at row <paramref name="sequence"/>, channels [0, windowed) a vector at a time,
    /// the rows down the block: x_t, x_(t-1), x_(t-2), x_(t-3) stay in registers, so each entry of x is loaded once and each
    /// of y stored once; rows outside the sequence read as zeros.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ForwardWindowed<T>(T* x, T* taps, T* bias, T* y, int from, int to, int sequence, int channels, int kernel, int windowed)
        where T : unmanaged, INumber<T>
    {
        for (int c = 0; c < windowed; c += Vector<T>.Count)
        {
            T* xc = x + c;
            var (t0, t1, t2, t3) = (Tap(taps, 0, kernel, channels, c), Tap(taps, 1, kernel, channels, c), Tap(taps, 2, kernel, channels, c), Tap(taps, 3, kernel, channels, c));
            var b = bias is null ? Vector<T>.Zero : Vector.Load(bias + c);
            var (x1, x2, x3) = (Row(xc, from - 1, sequence, to, channels), Row(xc, from - 2, sequence, to, channels), Row(xc, from - 3, sequence, to, channels));
            for (long r = from; r < to; r++)
            {
                var x0 = Vector.Load(xc + r * channels);
                // only the kernel's taps: a zero tap on a non-finite entry would make NaN of an output that does not read it
                var sum = VectorFused.MultiplyAdd(t0, x0, b);
                if (kernel > 1) sum = VectorFused.MultiplyAdd(t1, x1, sum);
                if (kernel > 2) sum = VectorFused.MultiplyAdd(t2, x2, sum);
                if (kernel > 3) sum = VectorFused.MultiplyAdd(t3, x3, sum);
                Vector.Store(sum, y + r * channels + c);
                (x3, x2, x1) = (x2, x1, x0);
            }
        }
    }

    /// <summary>Output rows [start, end), channels [from, channels), row by row.</summary>
    private static void ForwardColumns<T>(T* x, T* taps, T* bias, T* y, int start, int end, int time, int channels, int kernel, int from)
        where T : unmanaged, INumber<T>
    {
        int width = channels - from;
        for (int r = start; r < end; r++)
        {
            int t = r % time;
            var row = y + (long)r * channels + from;
            if (bias is null) new Span<T>(row, width).Clear();
            else new ReadOnlySpan<T>(bias + from, width).CopyTo(new Span<T>(row, width));
            for (int i = 0; i < kernel && i <= t; i++)
                MultiplyAdd(row, taps + (long)i * channels + from, x + (long)(r - i) * channels + from, width);
        }
    }

    /// <summary>The reverse pass; split over the cores, each range of rows sums its own share of dtaps and dbias.</summary>
    public static void Backward<T>(T* dy, T* x, T* taps, T* dx, T* dtaps, T* dbias, int batch, int time, int channels, int kernel)
        where T : unmanaged, INumber<T>
    {
        var pieces = Pieces(batch * time, channels, kernel);
        if (pieces.Length == 1)
        {
            BackwardRows(dy, x, taps, dx, dtaps, dbias, 0, batch * time, time, channels, kernel);
            return;
        }
        // per piece: its dtaps [K, C], then its dbias [C]
        var width = kernel * channels + (dbias is null ? 0 : channels);
        var partial = new T[pieces.Length * width];
        fixed (T* shares = partial)
        {
            var (pdy, px, pt, pdx, ps) = ((nint)dy, (nint)x, (nint)taps, (nint)dx, (nint)shares);
            var withBias = dbias is not null;
            KernelTeam.For(pieces.Length, p =>
            {
                T* share = (T*)ps + (long)p * width;
                BackwardRows((T*)pdy, (T*)px, (T*)pt, (T*)pdx, share, withBias ? share + kernel * channels : null, pieces[p].Start, pieces[p].End,
                    time, channels, kernel);
            });
            new Span<T>(shares, width).Slice(0, kernel * channels).CopyTo(new Span<T>(dtaps, kernel * channels));
            if (withBias) new Span<T>(shares + kernel * channels, channels).CopyTo(new Span<T>(dbias, channels));
            for (int p = 1; p < pieces.Length; p++)
            {
                Add(dtaps, shares + (long)p * width, kernel * channels);
                if (withBias) Add(dbias, shares + (long)p * width + kernel * channels, channels);
            }
        }
    }

    /// <summary>dx for rows [start, end), and their sums into dtaps and dbias (cleared first): the channels a vector holds
    /// through a window of registers when the taps fit one, the rest row by row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardRows<T>(T* dy, T* x, T* taps, T* dx, T* dtaps, T* dbias, int start, int end, int time, int channels, int kernel)
        where T : unmanaged, INumber<T>
    {
        new Span<T>(dtaps, kernel * channels).Clear();
        if (dbias is not null) new Span<T>(dbias, channels).Clear();
        var windowed = WindowedChannels<T>(channels, kernel);
        foreach (var (first, last, sequence) in Sequences(start, end, time))
            for (int from = first; from < last; from += BlockRows)
                BackwardWindowed(dy, x, taps, dx, dtaps, dbias, from, Math.Min(from + BlockRows, last), sequence, sequence + time, channels, kernel, windowed);
        if (windowed < channels) BackwardColumns(dy, x, taps, dx, dtaps, dbias, start, end, time, channels, kernel, windowed);
    }

    /// <summary>
    /// Rows [from, to) of the sequence whose rows are [first, after), channels [0, windowed) a vector at a time, the rows
    /// down the block: dy_s .. dy_(s+3) and x_s .. x_(s-3) stay in registers, and so do the taps' and the bias's sums over
    /// the block, so each entry of dy and x is loaded once and each of dx stored once; rows outside the sequence read as zeros.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BackwardWindowed<T>(T* dy, T* x, T* taps, T* dx, T* dtaps, T* dbias, int from, int to, int first, int after, int channels,
        int kernel, int windowed) where T : unmanaged, INumber<T>
    {
        for (int c = 0; c < windowed; c += Vector<T>.Count)
        {
            T* gc = dy + c, xc = x + c;
            var (t0, t1, t2, t3) = (Tap(taps, 0, kernel, channels, c), Tap(taps, 1, kernel, channels, c), Tap(taps, 2, kernel, channels, c), Tap(taps, 3, kernel, channels, c));
            var (d0, d1, d2, d3) = (Tap(dtaps, 0, kernel, channels, c), Tap(dtaps, 1, kernel, channels, c), Tap(dtaps, 2, kernel, channels, c), Tap(dtaps, 3, kernel, channels, c));
            var db = dbias is null ? Vector<T>.Zero : Vector.Load(dbias + c);
            var (g0, g1, g2, g3) = (Row(gc, from, first, after, channels), Row(gc, from + 1, first, after, channels), Row(gc, from + 2, first, after, channels),
                Row(gc, from + 3, first, after, channels));
            var (x1, x2, x3) = (Row(xc, from - 1, first, after, channels), Row(xc, from - 2, first, after, channels), Row(xc, from - 3, first, after, channels));
            for (long r = from; r < to; r++)
            {
                var x0 = Vector.Load(xc + r * channels);
                var sum = t0 * g0;
                d0 = VectorFused.MultiplyAdd(g0, x0, d0);
                if (kernel > 1) (sum, d1) = (VectorFused.MultiplyAdd(t1, g1, sum), VectorFused.MultiplyAdd(g0, x1, d1));
                if (kernel > 2) (sum, d2) = (VectorFused.MultiplyAdd(t2, g2, sum), VectorFused.MultiplyAdd(g0, x2, d2));
                if (kernel > 3) (sum, d3) = (VectorFused.MultiplyAdd(t3, g3, sum), VectorFused.MultiplyAdd(g0, x3, d3));
                Vector.Store(sum, dx + r * channels + c);
                db += g0;
                (x3, x2, x1) = (x2, x1, x0);
                (g0, g1, g2) = (g1, g2, g3);
                g3 = r + 4 < after ? Vector.Load(gc + (r + 4) * channels) : Vector<T>.Zero;
            }
            StoreTap(d0, dtaps, 0, kernel, channels, c);
            StoreTap(d1, dtaps, 1, kernel, channels, c);
            StoreTap(d2, dtaps, 2, kernel, channels, c);
            StoreTap(d3, dtaps, 3, kernel, channels, c);
            if (dbias is not null) Vector.Store(db, dbias + c);
        }
    }

    /// <summary>dx for rows [start, end), channels [from, channels), row by row, and their sums added into dtaps and dbias.</summary>
    private static void BackwardColumns<T>(T* dy, T* x, T* taps, T* dx, T* dtaps, T* dbias, int start, int end, int time, int channels, int kernel,
        int from) where T : unmanaged, INumber<T>
    {
        int width = channels - from;
        for (int r = start; r < end; r++)
        {
            int s = r % time;
            var gradient = dy + (long)r * channels + from;
            var row = dx + (long)r * channels + from;
            new Span<T>(row, width).Clear();
            for (int i = 0; i < kernel && s + i < time; i++)
                MultiplyAdd(row, taps + (long)i * channels + from, gradient + (long)i * channels, width);
            for (int i = 0; i < kernel && i <= s; i++)
                MultiplyAdd(dtaps + (long)i * channels + from, gradient, x + (long)(r - i) * channels + from, width);
            if (dbias is not null) Add(dbias + from, gradient, width);
        }
    }

    /// <summary>Taps a window of registers holds.</summary>
    private const int WindowTaps = 4;

    /// <summary>Rows a window runs down before the next vector of channels (their rows of dy, x and dx stay in cache).</summary>
    private const int BlockRows = 16;

    /// <summary>The channels [0, n) run through a window: whole vectors, when the kernel fits one.</summary>
    private static int WindowedChannels<T>(int channels, int kernel) where T : unmanaged, INumber<T> =>
        kernel <= WindowTaps && Vector.IsHardwareAccelerated && Vector<T>.IsSupported ? channels - channels % Vector<T>.Count : 0;

    /// <summary>The rows [start, end) split where a sequence (T rows) ends: each part's first and last + 1 row, and the
    /// first row of its sequence.</summary>
    private static IEnumerable<(int First, int Last, int Sequence)> Sequences(int start, int end, int time)
    {
        for (int first = start; first < end; first = first - first % time + time)
            yield return (first, Math.Min(end, first - first % time + time), first - first % time);
    }

    /// <summary>Row r's channels from c (p points at channel c of row 0), zero outside the sequence's rows [first, after).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Row<T>(T* p, long r, int first, int after, int channels) where T : unmanaged, INumber<T> =>
        r >= first && r < after ? Vector.Load(p + r * channels) : Vector<T>.Zero;

    /// <summary>Tap i's channels from c, zero past the kernel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Tap<T>(T* taps, int i, int kernel, int channels, int c) where T : unmanaged, INumber<T> =>
        i < kernel ? Vector.Load(taps + (long)i * channels + c) : Vector<T>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTap<T>(Vector<T> v, T* taps, int i, int kernel, int channels, int c) where T : unmanaged, INumber<T>
    {
        if (i < kernel) Vector.Store(v, taps + (long)i * channels + c);
    }

    /// <summary>sum[c] += a[c] * b[c].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MultiplyAdd<T>(T* sum, T* a, T* b, int length) where T : unmanaged, INumber<T>
    {
        int c = 0;
        if (Vector.IsHardwareAccelerated && Vector<T>.IsSupported)
            for (; c <= length - Vector<T>.Count; c += Vector<T>.Count)
            {
                var s = Vector.Load(sum + c) + Vector.Load(a + c) * Vector.Load(b + c);
                s.Store(sum + c);
            }
        for (; c < length; c++) sum[c] += a[c] * b[c];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Add<T>(T* sum, T* a, long length) where T : unmanaged, INumber<T>
    {
        for (long c = 0; c < length; c++) sum[c] += a[c];
    }
}

/// <summary>
/// The causal depthwise convolution as one autograd operation (<see cref="CausalConvolution"/>): x: [B, T, C],
/// weight: [C, K] (tap i weighs the step i back), bias: [C] or null; returns y: [B, T, C].
/// </summary>
internal sealed class CausalConvolutionFunction : SingleTensorFunction<CausalConvolutionFunction>
{
    public override string Name => "CausalConvolution";

    public static Tensor Run(Tensor x, Tensor weight, Tensor? bias) => apply(x.contiguous(), weight, bias!);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (x, weight, bias) = ((Tensor)vars[0], (Tensor)vars[1], vars[2] as Tensor);
        var taps = weight.t().contiguous();
        var b = bias?.contiguous();
        var y = LargeTensors.EmptyLike(x);
        if (x.dtype == ScalarType.Float32) Forward<float>(x, taps, b, y);
        else Forward<double>(x, taps, b, y);
        ctx.save_for_backward([x, taps, b!]);
        return y;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () => ReversePass(ctx, grad));

    private static List<Tensor> ReversePass(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        var (x, taps, bias) = (saved[0], saved[1], saved[2] is { IsInvalid: false } s ? s : null);
        var dy = grad.contiguous();
        var (dx, dtaps) = (LargeTensors.EmptyLike(x), empty_like(taps));
        var dbias = bias is null ? null : empty_like(bias);
        if (x.dtype == ScalarType.Float32) Backward<float>(dy, x, taps, dx, dtaps, dbias);
        else Backward<double>(dy, x, taps, dx, dtaps, dbias);
        return [dx, dtaps.t(), dbias!];
    }

    private static unsafe void Forward<T>(Tensor x, Tensor taps, Tensor? bias, Tensor y) where T : unmanaged, INumber<T>
    {
        using var alive = RawStorage.KeepAlive(x, taps, bias, y);
        CausalConvolution.Forward(RawStorage.Pointer<T>(x), RawStorage.Pointer<T>(taps), RawStorage.PointerOrNull<T>(bias), RawStorage.Pointer<T>(y),
            (int)x.shape[0], (int)x.shape[1], (int)x.shape[2], (int)taps.shape[0]);
    }

    private static unsafe void Backward<T>(Tensor dy, Tensor x, Tensor taps, Tensor dx, Tensor dtaps, Tensor? dbias) where T : unmanaged, INumber<T>
    {
        using var alive = RawStorage.KeepAlive(dy, x, taps, dx, dtaps, dbias);
        CausalConvolution.Backward(RawStorage.Pointer<T>(dy), RawStorage.Pointer<T>(x), RawStorage.Pointer<T>(taps), RawStorage.Pointer<T>(dx),
            RawStorage.Pointer<T>(dtaps), RawStorage.PointerOrNull<T>(dbias), (int)x.shape[0], (int)x.shape[1], (int)x.shape[2], (int)taps.shape[0]);
    }
}
