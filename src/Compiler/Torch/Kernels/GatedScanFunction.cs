using Duality.Execution;
using System.Numerics;
using Duality.Ir;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// h_t = lambda_t * h_{t-1} + value_t * f(s gate_t) as one autograd operation: the fused forward pass
/// (<see cref="GatedScan.Run{T}"/>) and one reverse pass for the gradients of value, gate and lambda or the decay
/// (<see cref="GatedScan.RunBackward{T}"/>), where node-by-node execution records an activation, a product
/// and a scan (and with a decay its sigmoid or exponential), each with its own [batch, time, width] results and
/// gradients. value, gate: [B, T, N]; lambda: [N] fixed or trained, or a decay d: [B, T, N] giving lambda_t =
/// sigmoid(r d_t) or e^(r d_t); h0: [N] or null, not trained.
/// </summary>
internal sealed class GatedScanFunction : SingleTensorFunction<GatedScanFunction>
{
    /// <summary>The constants of one call: the gate's function and factor s, and for a decay its factor r and form.</summary>
    public sealed record Form(ActivationKind Activation, double GateFactor = 1, bool PerStep = false, double DecayFactor = 1, bool Exponential = false);

    public override string Name => "GatedScan";

    /// <summary>With <paramref name="form"/>.PerStep, <paramref name="lambda"/> is the decay d ([B, T, N]).</summary>
    public static Tensor Run(Tensor value, Tensor gate, Tensor lambda, Tensor? h0, Form form) =>
        apply(value.contiguous(), gate.contiguous(), lambda.contiguous(), h0?.contiguous()!, form);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (value, gate, lambda, h0, form) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor, (Form)vars[4]);
        var h = LargeTensors.EmptyLike(value);
        if (value.dtype == ScalarType.Float32) Forward<float>(value, gate, lambda, h0, h, form);
        else Forward<double>(value, gate, lambda, h0, h, form);
        ctx.save_for_backward([value, gate, lambda, h0!, h]);
        ctx.save_data("form", form);
        ctx.save_data("lambdaGradient", lambda.requires_grad);
        return h;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        var (value, gate, lambda, h0, h) = (saved[0], saved[1], saved[2], saved[3] is { IsInvalid: false } s ? s : null, saved[4]);
        var (dh, channelBroadcast) = ChannelBroadcastGradient.Of(grad);
        var (form, lambdaGradient) = ((Form)ctx.get_data("form"), (bool)ctx.get_data("lambdaGradient"));
        var (dValue, dGate) = (LargeTensors.EmptyLike(value), LargeTensors.EmptyLike(gate));
        var lambdaRows = lambdaGradient && !form.PerStep ? empty(value.shape[0], value.shape[2], dtype: value.dtype) : null;
        var dDecay = form.PerStep ? LargeTensors.EmptyLike(lambda) : null;
        if (value.dtype == ScalarType.Float32) Backward<float>(dh, channelBroadcast, value, gate, lambda, h0, h, dValue, dGate, lambdaRows, dDecay, form);
        else Backward<double>(dh, channelBroadcast, value, gate, lambda, h0, h, dValue, dGate, lambdaRows, dDecay, form);
        return [dValue, dGate, (dDecay ?? lambdaRows?.sum([0L]))!, null!, null!];
    }

    private static unsafe GatedScan.Decay<T> Decay<T>(Tensor lambda, Form form) where T : unmanaged, IFloatingPointIeee754<T> =>
        form.PerStep
            ? GatedScan.Decay<T>.PerStep(RawStorage.Pointer<T>(lambda), false, T.CreateTruncating(form.DecayFactor), form.Exponential)
            : GatedScan.Decay<T>.Fixed(RawStorage.Pointer<T>(lambda));

    private static unsafe void Forward<T>(Tensor value, Tensor gate, Tensor lambda, Tensor? h0, Tensor h, Form form)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(value, gate, lambda, h0, h);
        GatedScan.Run(RawStorage.Pointer<T>(value), RawStorage.Pointer<T>(gate), T.CreateTruncating(form.GateFactor), Decay<T>(lambda, form),
            RawStorage.PointerOrNull<T>(h0), RawStorage.Pointer<T>(h), default, form.Activation, Shape(value));
    }

    private static unsafe void Backward<T>(Tensor dh, bool channelBroadcast, Tensor value, Tensor gate, Tensor lambda, Tensor? h0, Tensor h,
        Tensor dValue, Tensor dGate, Tensor? lambdaRows, Tensor? dDecay, Form form) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(dh, value, gate, lambda, h0, h, dValue, dGate, lambdaRows, dDecay);
        GatedScan.RunBackward(RawStorage.Pointer<T>(dh), channelBroadcast, RawStorage.Pointer<T>(value), RawStorage.Pointer<T>(gate),
            T.CreateTruncating(form.GateFactor), Decay<T>(lambda, form), RawStorage.PointerOrNull<T>(h0), RawStorage.Pointer<T>(h),
            RawStorage.Pointer<T>(dValue), RawStorage.Pointer<T>(dGate), RawStorage.PointerOrNull<T>(lambdaRows), RawStorage.PointerOrNull<T>(dDecay),
            form.Activation, Shape(value));
    }

    private static GatedScan.Shape Shape(Tensor value) => new((int)value.shape[0], (int)value.shape[1], (int)value.shape[2]);
}
