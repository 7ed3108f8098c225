using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>Raw-storage access to contiguous CPU tensors, for the kernels.</summary>
internal static unsafe class RawStorage
{
    public static T* Pointer<T>(Tensor tensor) where T : unmanaged =>
        (T*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(MemoryMarshal.Cast<byte, T>(tensor.bytes)));

    public static T* PointerOrNull<T>(Tensor? tensor) where T : unmanaged => tensor is null ? null : Pointer<T>(tensor);
}

/// <summary>
/// h_t = lambda_t * h_{t-1} + u_t as one autograd operation with a fused forward and a reverse-scan
/// backward. u: [batch, time, width]; lambda: [width], [batch, time, width] or [batch, time, 1];
/// h0: [width] or null (zero). Returns h: [batch, time, width].
/// </summary>
internal sealed class LinearScan : SingleTensorFunction<LinearScan>
{
    public override string Name => "LinearScan";

    public static Tensor Run(Tensor u, Tensor lambda, Tensor? h0) => apply(u.contiguous(), lambda.contiguous(), h0?.contiguous()!, Layout(u, lambda));

    private static LambdaLayout Layout(Tensor u, Tensor lambda) =>
        lambda.dim() == 1 ? LambdaLayout.PerChannel : lambda.shape[^1] == 1 && u.shape[^1] != 1 ? LambdaLayout.PerStepShared : LambdaLayout.PerStep;

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (u, lambda, h0, layout) = ((Tensor)vars[0], (Tensor)vars[1], vars[2] as Tensor, (LambdaLayout)vars[3]);
        var h = empty_like(u);
        if (u.dtype == ScalarType.Float32) Forward<float>(u, lambda, h0, h, layout); else Forward<double>(u, lambda, h0, h, layout);
        ctx.save_for_backward([lambda, h0!, h]);
        ctx.save_data("layout", layout);
        return h;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        var (lambda, h0, h) = (saved[0], saved[1] is { IsInvalid: false } s ? s : null, saved[2]);
        var layout = (LambdaLayout)ctx.get_data("layout");
        var g = grad.contiguous();
        var (du, dLambda, dh0) = g.dtype == ScalarType.Float32
            ? Backward<float>(g, lambda, h0, h, layout)
            : Backward<double>(g, lambda, h0, h, layout);
        return [du, dLambda, dh0!, null!];
    }

    private static unsafe void Forward<T>(Tensor u, Tensor lambda, Tensor? h0, Tensor h, LambdaLayout layout) where T : unmanaged, INumber<T>
    {
        var pu = RawStorage.Pointer<T>(u);
        var pl = RawStorage.Pointer<T>(lambda);
        var ph0 = RawStorage.PointerOrNull<T>(h0);
        var ph = RawStorage.Pointer<T>(h);
        int batch = (int)u.shape[0], time = (int)u.shape[1], width = (int)u.shape[2];
        if (time == 0) return;
        ScanLoops.Parallel(batch, width, (b, n0, n1) => ScanLoops.RealForward(pu, pl, layout, ph0, ph, b, n0, n1, time, width));
    }

    private static unsafe (Tensor, Tensor, Tensor?) Backward<T>(Tensor g, Tensor lambda, Tensor? h0, Tensor h, LambdaLayout layout)
        where T : unmanaged, INumber<T>
    {
        int batch = (int)g.shape[0], time = (int)g.shape[1], width = (int)g.shape[2];
        var du = empty_like(g);
        var perChannel = layout == LambdaLayout.PerChannel;
        var dLambda = perChannel ? zeros(batch, width, dtype: g.dtype) : zeros_like(g);
        var dh0 = h0 is null ? null : zeros(batch, width, dtype: g.dtype);
        var pg = RawStorage.Pointer<T>(g);
        var pl = RawStorage.Pointer<T>(lambda);
        var ph0 = RawStorage.PointerOrNull<T>(h0);
        var ph = RawStorage.Pointer<T>(h);
        var pdu = RawStorage.Pointer<T>(du);
        var pdl = RawStorage.Pointer<T>(dLambda);
        var pdh0 = RawStorage.PointerOrNull<T>(dh0);
        if (time > 0)
            ScanLoops.Parallel(batch, width, (b, n0, n1) =>
                ScanLoops.RealBackward(pg, pl, layout, ph0, ph, pdu, perChannel ? pdl + (long)b * width : pdl,
                    pdh0 == null ? null : pdh0 + (long)b * width, b, n0, n1, time, width));
        var lambdaGrad = layout switch
        {
            LambdaLayout.PerChannel => dLambda.sum([0L]),
            LambdaLayout.PerStepShared => dLambda.sum([-1L], keepdim: true),
            _ => dLambda,
        };
        return (du, lambdaGrad, dh0?.sum([0L]));
    }
}

/// <summary>
/// The complex scan (re, im)_t = lambda (re, im)_{t-1} + (u_t, 0) as one autograd operation.
/// u: [batch, time, width] real; lambda: [width, 2] as (re, im); h0: [width, 2] or null.
/// Returns [batch, time, 2 width]: real parts, then imaginary parts.
/// </summary>
internal sealed class ComplexScan : SingleTensorFunction<ComplexScan>
{
    public override string Name => "ComplexScan";

    public static Tensor Run(Tensor u, Tensor lambda, Tensor? h0) => apply(u.contiguous(), lambda, h0!);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (u, lambda, h0) = ((Tensor)vars[0], (Tensor)vars[1], vars[2] as Tensor);
        var (lre, lim) = (lambda.select(1, 0).contiguous(), lambda.select(1, 1).contiguous());
        var (h0re, h0im) = (h0?.select(1, 0).contiguous(), h0?.select(1, 1).contiguous());
        var h = empty(u.shape[0], u.shape[1], 2 * u.shape[2], dtype: u.dtype);
        if (u.dtype == ScalarType.Float32) Forward<float>(u, lre, lim, h0re, h0im, h); else Forward<double>(u, lre, lim, h0re, h0im, h);
        ctx.save_for_backward([lre, lim, h0re!, h0im!, h]);
        return h;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        Tensor? Optional(Tensor t) => t is { IsInvalid: false } ? t : null;
        var (lre, lim, h0re, h0im, h) = (saved[0], saved[1], Optional(saved[2]), Optional(saved[3]), saved[4]);
        var g = grad.contiguous();
        var (du, dLambda, dh0) = g.dtype == ScalarType.Float32
            ? Backward<float>(g, lre, lim, h0re, h0im, h)
            : Backward<double>(g, lre, lim, h0re, h0im, h);
        return [du, dLambda, dh0!];
    }

    private static unsafe void Forward<T>(Tensor u, Tensor lre, Tensor lim, Tensor? h0re, Tensor? h0im, Tensor h) where T : unmanaged, INumber<T>
    {
        var pu = RawStorage.Pointer<T>(u);
        var pr = RawStorage.Pointer<T>(lre);
        var pi = RawStorage.Pointer<T>(lim);
        var p0r = RawStorage.PointerOrNull<T>(h0re);
        var p0i = RawStorage.PointerOrNull<T>(h0im);
        var ph = RawStorage.Pointer<T>(h);
        int batch = (int)u.shape[0], time = (int)u.shape[1], width = (int)u.shape[2];
        if (time == 0) return;
        ScanLoops.Parallel(batch, width, (b, n0, n1) => ScanLoops.ComplexForward(pu, pr, pi, p0r, p0i, ph, b, n0, n1, time, width));
    }

    private static unsafe (Tensor, Tensor, Tensor?) Backward<T>(Tensor g, Tensor lre, Tensor lim, Tensor? h0re, Tensor? h0im, Tensor h)
        where T : unmanaged, INumber<T>
    {
        int batch = (int)g.shape[0], time = (int)g.shape[1], width = (int)g.shape[2] / 2;
        var adjoint = empty_like(g);
        var dl = zeros(2, batch, width, dtype: g.dtype);
        var dh0 = h0re is null ? null : zeros(2, batch, width, dtype: g.dtype);
        var pg = RawStorage.Pointer<T>(g);
        var pr = RawStorage.Pointer<T>(lre);
        var pi = RawStorage.Pointer<T>(lim);
        var p0r = RawStorage.PointerOrNull<T>(h0re);
        var p0i = RawStorage.PointerOrNull<T>(h0im);
        var ph = RawStorage.Pointer<T>(h);
        var pa = RawStorage.Pointer<T>(adjoint);
        var pdl = RawStorage.Pointer<T>(dl);
        var pdh0 = RawStorage.PointerOrNull<T>(dh0);
        long plane = (long)batch * width;
        if (time > 0)
            ScanLoops.Parallel(batch, width, (b, n0, n1) =>
                ScanLoops.ComplexBackward(pg, pr, pi, p0r, p0i, ph, pa, pdl + (long)b * width, pdl + plane + (long)b * width,
                    pdh0 == null ? null : pdh0 + (long)b * width, pdh0 == null ? null : pdh0 + plane + (long)b * width,
                    b, n0, n1, time, width));
        var du = adjoint.narrow(-1, 0, width).contiguous();
        return (du, dl.sum([1L]).t().contiguous(), dh0?.sum([1L]).t().contiguous());
    }
}
