using Duality.Execution;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// h_t = lambda_t * h_{t-1} + u_t as one autograd operation with a fused forward and a reverse-scan
/// backward. u: [batch, time, width]; lambda: [width], [batch, time, width] or [batch, time, 1];
/// h0: [width] or null (zero). Returns h: [batch, time, width].
/// </summary>
internal sealed class LinearScan : SingleTensorFunction<LinearScan>
{
    private sealed record Saved(LambdaLayout Layout, bool LambdaGradient, bool InitialGradient);

    public override string Name => "LinearScan";

    /// <summary>The scan; without gradients its result may be written into <paramref name="into"/> ([batch, time, width], contiguous).</summary>
    public static Tensor Run(Tensor u, Tensor lambda, Tensor? h0, Tensor? into = null)
    {
        var (input, eigenvalues, initial, layout) = (u.contiguous(), lambda.contiguous(), h0?.contiguous(), Layout(u, lambda));
        return GradientGate.Records(input, eigenvalues, initial)
            ? apply(GradientGate.Through(input), eigenvalues, initial!, layout)
            : Scan(input, eigenvalues, initial, layout, into);
    }

    private static LambdaLayout Layout(Tensor u, Tensor lambda) =>
        lambda.dim() == 1 ? LambdaLayout.PerChannel : lambda.shape[^1] == 1 && u.shape[^1] != 1 ? LambdaLayout.PerStepShared : LambdaLayout.PerStep;

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (u, lambda, h0, layout) = ((Tensor)vars[0], (Tensor)vars[1], vars[2] as Tensor, (LambdaLayout)vars[3]);
        var h = Scan(u, lambda, h0, layout);
        ctx.save_for_backward([lambda, h0!, h]);
        ctx.save_data("saved", new Saved(layout, lambda.requires_grad, h0?.requires_grad == true));
        return h;
    }

    private static Tensor Scan(Tensor u, Tensor lambda, Tensor? h0, LambdaLayout layout, Tensor? into = null)
    {
        var h = into ?? LargeTensors.EmptyLike(u);
        if (u.dtype == ScalarType.Float32) Forward<float>(u, lambda, h0, h, layout); else Forward<double>(u, lambda, h0, h, layout);
        return h;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () => ReversePass(ctx, grad));

    private static List<Tensor> ReversePass(AutogradContext ctx, Tensor grad)
    {
        var tensors = ctx.get_saved_variables();
        var (lambda, h0, h) = (tensors[0], tensors[1] is { IsInvalid: false } s ? s : null, tensors[2]);
        var saved = (Saved)ctx.get_data("saved");
        var (g, channelBroadcast) = ChannelBroadcastGradient.Of(grad);
        var (du, dLambda, dh0) = g.dtype == ScalarType.Float32
            ? Backward<float>(g, channelBroadcast, lambda, h0, h, saved)
            : Backward<double>(g, channelBroadcast, lambda, h0, h, saved);
        return [du, dLambda!, dh0!, null!];
    }

    private static unsafe void Forward<T>(Tensor u, Tensor lambda, Tensor? h0, Tensor h, LambdaLayout layout) where T : unmanaged, INumber<T>
    {
        using var alive = RawStorage.KeepAlive(u, lambda, h0, h);
        int batch = (int)u.shape[0], time = (int)u.shape[1], width = (int)u.shape[2];
        var ph = RawStorage.Pointer<T>(h);
        var scan = new RealForwardScan<T>(RawStorage.Pointer<T>(u), RawStorage.Pointer<T>(lambda), layout, RawStorage.PointerOrNull<T>(h0), ph,
            time, width, StreamingStores.Suit(ph, width, h.numel()));
        if (time > 0) ScanPartition.For(batch, width).Run(scan.Run);
    }

    private static unsafe (Tensor Input, Tensor? Lambda, Tensor? Initial) Backward<T>(Tensor g, bool channelBroadcast, Tensor lambda, Tensor? h0, Tensor h,
        Saved saved) where T : unmanaged, INumber<T>
    {
        using var alive = RawStorage.KeepAlive(g, lambda, h0, h);
        int batch = (int)h.shape[0], time = (int)h.shape[1], width = (int)h.shape[2];
        var partition = ScanPartition.For(batch, width);
        var du = LargeTensors.EmptyLike(h);
        var lambdaRows = saved.LambdaGradient ? LambdaGradientRows(saved.Layout, h, partition) : null;
        var initialRows = saved.InitialGradient && h0 is not null ? zeros(batch, width, dtype: h.dtype) : null;
        var pdu = RawStorage.Pointer<T>(du);
        var pdl = RawStorage.PointerOrNull<T>(lambdaRows);
        var scan = new RealBackwardScan<T>(RawStorage.Pointer<T>(g), channelBroadcast, RawStorage.Pointer<T>(lambda), saved.Layout,
            RawStorage.PointerOrNull<T>(h0), RawStorage.Pointer<T>(h), pdu, pdl, RawStorage.PointerOrNull<T>(initialRows),
            time, width, partition.Blocks,
            StreamingStores.Suit(pdu, width, du.numel()) && (saved.Layout != LambdaLayout.PerStep || pdl == null || StreamingStores.Suit(pdl, width, du.numel())));
        if (time > 0) partition.Run(scan.Run);
        return (du, LambdaGradient(saved.Layout, lambdaRows), initialRows?.sum([0L]));
    }

    /// <summary>Where the kernel writes the eigenvalue gradient: [batch, width], [batch, time, width] or [batch, time, blocks].</summary>
    private static Tensor LambdaGradientRows(LambdaLayout layout, Tensor h, ScanPartition partition) => layout switch
    {
        LambdaLayout.PerChannel => zeros(h.shape[0], h.shape[2], dtype: h.dtype),
        LambdaLayout.PerStep => h.shape[1] == 0 ? zeros_like(h) : LargeTensors.EmptyLike(h),
        _ => zeros(h.shape[0], h.shape[1], partition.Blocks, dtype: h.dtype),
    };

    private static Tensor? LambdaGradient(LambdaLayout layout, Tensor? rows) => rows is null ? null : layout switch
    {
        LambdaLayout.PerChannel => rows.sum([0L]),
        LambdaLayout.PerStepShared => rows.sum([-1L], keepdim: true),
        _ => rows,
    };
}

/// <summary>
/// Gradients arriving at a scan: a gradient that is the same for every channel (e.g. from sum(), an
/// expanded scalar with stride 0) is read as its [batch, time] values instead of being materialised.
/// </summary>
internal static class ChannelBroadcastGradient
{
    public static (Tensor Values, bool ChannelBroadcast) Of(Tensor grad) =>
        grad.dim() == 3 && grad.shape[2] > 0 && grad.stride(2) == 0 ? (grad.select(-1, 0).contiguous(), true) : (grad.contiguous(), false);
}

/// <summary>How the scans enter autograd.</summary>
internal static class GradientGate
{
    /// <summary>Whether a gradient is to be recorded; without one the kernels run directly, outside a custom function.</summary>
    public static bool Records(params Tensor?[] inputs) => is_grad_enabled() && inputs.Any(t => t is { requires_grad: true });

    /// <summary>
    /// Autograd stores a gradient as a leaf's .grad without copying only while it holds the sole reference,
    /// and the managed wrapper of a custom function's result keeps another one: an input that requires grad
    /// enters through a view, whose backward hands autograd a fresh alias of the gradient instead.
    /// </summary>
    public static Tensor Through(Tensor input) => input.requires_grad ? input.view(input.shape) : input;
}

/// <summary>
/// The complex scan (re, im)_t = lambda (re, im)_{t-1} + gain u_t as one autograd operation: one forward pass and one
/// reverse pass. u is real, [batch, time, width], fed on the real part, or with complexInput [batch, time, 2 width] as
/// [re; im] (the LRU's B x_t, where node-by-node execution would scale the input, run two scans and combine their four
/// halves). lambda: [width, 2] as (re, im); h0: [width, 2] or null; gain: [width] or null (1).
/// Returns [batch, time, 2 width]: real parts, then imaginary parts.
/// </summary>
internal sealed class ComplexScan : SingleTensorFunction<ComplexScan>
{
    public override string Name => "ComplexScan";

    public static Tensor Run(Tensor u, Tensor lambda, Tensor? h0, Tensor? gain = null, bool complexInput = false)
    {
        var (input, scale) = (u.contiguous(), gain?.contiguous());
        return GradientGate.Records(input, lambda, h0, scale)
            ? apply(GradientGate.Through(input), lambda, h0!, scale!, complexInput)
            : Scan(input, Parts(lambda), h0 is null ? null : Parts(h0), scale, complexInput);
    }

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (u, lambda, h0, gain, complexInput) = ((Tensor)vars[0], Parts((Tensor)vars[1]),
            vars[2] is Tensor pairs ? Parts(pairs) : ((Tensor Re, Tensor Im)?)null, vars[3] as Tensor, (bool)vars[4]);
        var h = Scan(u, lambda, h0, gain, complexInput);
        // the input only for the gain's gradient
        ctx.save_for_backward([lambda.Re, lambda.Im, h0?.Re!, h0?.Im!, h, gain!, gain is null ? null! : u]);
        ctx.save_data("complexInput", complexInput);
        return h;
    }

    private static (Tensor Re, Tensor Im) Parts(Tensor pairs) => (pairs.select(1, 0).contiguous(), pairs.select(1, 1).contiguous());

    private static Tensor Scan(Tensor u, (Tensor Re, Tensor Im) lambda, (Tensor Re, Tensor Im)? h0, Tensor? gain, bool complexInput)
    {
        var h = LargeTensors.Empty([u.shape[0], u.shape[1], 2 * lambda.Re.shape[0]], u.dtype);
        if (u.dtype == ScalarType.Float32) Forward<float>(u, lambda, h0, gain, complexInput, h);
        else Forward<double>(u, lambda, h0, gain, complexInput, h);
        return h;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () => ReversePass(ctx, grad));

    private static List<Tensor> ReversePass(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        Tensor? Optional(Tensor t) => t is { IsInvalid: false } ? t : null;
        var (lre, lim, h0re, h0im, h, gain, u) = (saved[0], saved[1], Optional(saved[2]), Optional(saved[3]), saved[4], Optional(saved[5]), Optional(saved[6]));
        var complexInput = (bool)ctx.get_data("complexInput");
        var g = grad.contiguous();
        var (du, dLambda, dh0, dGain) = g.dtype == ScalarType.Float32
            ? Backward<float>(g, lre, lim, h0re, h0im, h, gain, u, complexInput)
            : Backward<double>(g, lre, lim, h0re, h0im, h, gain, u, complexInput);
        return [du, dLambda, dh0!, dGain!, null!];
    }

    private static unsafe void Forward<T>(Tensor u, (Tensor Re, Tensor Im) lambda, (Tensor Re, Tensor Im)? h0, Tensor? gain, bool complexInput, Tensor h)
        where T : unmanaged, INumber<T>
    {
        using var alive = RawStorage.KeepAlive(u, lambda.Re, lambda.Im, h0?.Re, h0?.Im, gain, h);
        T* pu = RawStorage.Pointer<T>(u), pr = RawStorage.Pointer<T>(lambda.Re), pi = RawStorage.Pointer<T>(lambda.Im);
        T* p0r = RawStorage.PointerOrNull<T>(h0?.Re), p0i = RawStorage.PointerOrNull<T>(h0?.Im), pg = RawStorage.PointerOrNull<T>(gain);
        T* ph = RawStorage.Pointer<T>(h);
        int batch = (int)u.shape[0], time = (int)u.shape[1], width = (int)lambda.Re.shape[0];
        if (time > 0)
            ScanPartition.For(batch, width).Run(item => ScanLoops.ComplexForward(pu, complexInput, pg, pr, pi, p0r, p0i, ph, item, time, width));
    }

    private static unsafe (Tensor Input, Tensor Lambda, Tensor? Initial, Tensor? Gain) Backward<T>(Tensor g, Tensor lre, Tensor lim, Tensor? h0re,
        Tensor? h0im, Tensor h, Tensor? gain, Tensor? u, bool complexInput) where T : unmanaged, INumber<T>
    {
        int batch = (int)g.shape[0], time = (int)g.shape[1], width = (int)g.shape[2] / 2;
        var du = LargeTensors.Empty([batch, time, complexInput ? 2 * width : width], g.dtype);
        var dl = zeros(2, batch, width, dtype: g.dtype);
        var dh0 = h0re is null ? null : zeros(2, batch, width, dtype: g.dtype);
        var dGain = gain is null ? null : zeros(batch, width, dtype: g.dtype);
        using var alive = RawStorage.KeepAlive(g, lre, lim, h0re, h0im, h, gain, u, du, dl, dh0, dGain);
        T* pg = RawStorage.Pointer<T>(g), pr = RawStorage.Pointer<T>(lre), pi = RawStorage.Pointer<T>(lim), pu = RawStorage.PointerOrNull<T>(u);
        T* p0r = RawStorage.PointerOrNull<T>(h0re), p0i = RawStorage.PointerOrNull<T>(h0im), pgain = RawStorage.PointerOrNull<T>(gain);
        T* ph = RawStorage.Pointer<T>(h), pdu = RawStorage.Pointer<T>(du), pdl = RawStorage.Pointer<T>(dl);
        T* pdh0 = RawStorage.PointerOrNull<T>(dh0), pdg = RawStorage.PointerOrNull<T>(dGain);
        long plane = (long)batch * width;
        if (time > 0)
            ScanPartition.For(batch, width).Run(item =>
                ScanLoops.ComplexBackward(pg, complexInput, pgain, pu, pdg == null ? null : pdg + (long)item.Batch * width, pr, pi, p0r, p0i, ph, pdu,
                    pdl + (long)item.Batch * width, pdl + plane + (long)item.Batch * width,
                    pdh0 == null ? null : pdh0 + (long)item.Batch * width, pdh0 == null ? null : pdh0 + plane + (long)item.Batch * width,
                    item, time, width));
        return (du, dl.sum([1L]).t().contiguous(), dh0?.sum([1L]).t().contiguous(), dGain?.sum([0L]));
    }
}
