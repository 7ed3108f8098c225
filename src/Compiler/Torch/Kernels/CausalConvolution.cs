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

    /// <summary>Output rows [start, end) of the B T rows (row n T + t).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRows<T>(T* x, T* taps, T* bias, T* y, int start, int end, int time, int channels, int kernel)
        where T : unmanaged, INumber<T>
    {
        for (int r = start; r < end; r++)
        {
            int t = r % time;
            var row = y + (long)r * channels;
            if (bias is null) new Span<T>(row, channels).Clear();
            else new ReadOnlySpan<T>(bias, channels).CopyTo(new Span<T>(row, channels));
            for (int i = 0; i < kernel && i <= t; i++)
                MultiplyAdd(row, taps + (long)i * channels, x + (long)(r - i) * channels, channels);
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

    /// <summary>dx for rows [start, end), and their sums into dtaps and dbias (cleared first).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardRows<T>(T* dy, T* x, T* taps, T* dx, T* dtaps, T* dbias, int start, int end, int time, int channels, int kernel)
        where T : unmanaged, INumber<T>
    {
        new Span<T>(dtaps, kernel * channels).Clear();
        if (dbias is not null) new Span<T>(dbias, channels).Clear();
        for (int r = start; r < end; r++)
        {
            int s = r % time;
            var gradient = dy + (long)r * channels;
            var row = dx + (long)r * channels;
            new Span<T>(row, channels).Clear();
            for (int i = 0; i < kernel && s + i < time; i++)
                MultiplyAdd(row, taps + (long)i * channels, gradient + (long)i * channels, channels);
            for (int i = 0; i < kernel && i <= s; i++)
                MultiplyAdd(dtaps + (long)i * channels, gradient, x + (long)(r - i) * channels, channels);
            if (dbias is not null) Add(dbias, gradient, channels);
        }
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
