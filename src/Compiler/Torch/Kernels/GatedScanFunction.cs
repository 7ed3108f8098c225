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
    /// <summary>
    /// The constants of one call: the gate's function and factor s, for a decay its factor r and form, and the function f2 of
    /// the value's own gate when there is one.
    /// </summary>
    public sealed record Form(ActivationKind Activation, double GateFactor = 1, bool PerStep = false, double DecayFactor = 1, bool Exponential = false,
        ActivationKind ValueActivation = ActivationKind.Identity);

    public override string Name => "GatedScan";

    /// <summary>
    /// With <paramref name="form"/>.PerStep, <paramref name="lambda"/> is the decay d ([B, T, N]); <paramref name="valueGate"/>
    /// ([B, T, N] or null) is the value's own gate.
    /// </summary>
    public static Tensor Run(Tensor value, Tensor? valueGate, Tensor gate, Tensor lambda, Tensor? h0, Form form) =>
        apply(value.contiguous(), gate.contiguous(), lambda.contiguous(), h0?.contiguous()!, valueGate?.contiguous()!, form);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (value, gate, lambda, h0, valueGate, form) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor, vars[4] as Tensor, (Form)vars[5]);
        var h = LargeTensors.EmptyLike(value);
        if (value.dtype == ScalarType.Float32) Forward<float>(value, valueGate, gate, lambda, h0, h, form);
        else Forward<double>(value, valueGate, gate, lambda, h0, h, form);
        ctx.save_for_backward([value, gate, lambda, h0!, h, valueGate!]);
        ctx.save_data("form", form);
        ctx.save_data("lambdaGradient", lambda.requires_grad);
        return h;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () => ReversePass(ctx, grad));

    private static List<Tensor> ReversePass(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        Tensor? Optional(Tensor t) => t is { IsInvalid: false } ? t : null;
        var (value, gate, lambda, h0, h, valueGate) = (saved[0], saved[1], saved[2], Optional(saved[3]), saved[4], Optional(saved[5]));
        var (dh, channelBroadcast) = ChannelBroadcastGradient.Of(grad);
        var (form, lambdaGradient) = ((Form)ctx.get_data("form"), (bool)ctx.get_data("lambdaGradient"));
        var (dValue, dGate) = (LargeTensors.EmptyLike(value), LargeTensors.EmptyLike(gate));
        var lambdaRows = lambdaGradient && !form.PerStep ? empty(value.shape[0], value.shape[2], dtype: value.dtype) : null;
        var dDecay = form.PerStep ? LargeTensors.EmptyLike(lambda) : null;
        var dValueGate = valueGate is null ? null : LargeTensors.EmptyLike(valueGate);
        var gradients = new Gradients(dValue, dValueGate, dGate, lambdaRows, dDecay);
        if (value.dtype == ScalarType.Float32) Backward<float>(dh, channelBroadcast, value, valueGate, gate, lambda, h0, h, gradients, form);
        else Backward<double>(dh, channelBroadcast, value, valueGate, gate, lambda, h0, h, gradients, form);
        return [dValue, dGate, (dDecay ?? lambdaRows?.sum([0L]))!, null!, dValueGate!, null!];
    }

    /// <summary>Where the reverse pass writes: the value's, its gate's, the gate's, and lambda's rows or the decay's gradients.</summary>
    private sealed record Gradients(Tensor Value, Tensor? ValueGate, Tensor Gate, Tensor? LambdaRows, Tensor? Decay);

    private static unsafe GatedScan.ValueGate<T> ValueGateOf<T>(Tensor? valueGate, Form form) where T : unmanaged =>
        new(RawStorage.PointerOrNull<T>(valueGate), form.ValueActivation);

    private static unsafe GatedScan.Decay<T> Decay<T>(Tensor lambda, Form form) where T : unmanaged, IFloatingPointIeee754<T> =>
        form.PerStep
            ? GatedScan.Decay<T>.PerStep(RawStorage.Pointer<T>(lambda), false, T.CreateTruncating(form.DecayFactor), form.Exponential)
            : GatedScan.Decay<T>.Fixed(RawStorage.Pointer<T>(lambda));

    private static unsafe void Forward<T>(Tensor value, Tensor? valueGate, Tensor gate, Tensor lambda, Tensor? h0, Tensor h, Form form)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(value, valueGate, gate, lambda, h0, h);
        GatedScan.Run(RawStorage.Pointer<T>(value), ValueGateOf<T>(valueGate, form), RawStorage.Pointer<T>(gate), T.CreateTruncating(form.GateFactor),
            Decay<T>(lambda, form),
            RawStorage.PointerOrNull<T>(h0), RawStorage.Pointer<T>(h), default, form.Activation, Shape(value));
    }

    private static unsafe void Backward<T>(Tensor dh, bool channelBroadcast, Tensor value, Tensor? valueGate, Tensor gate, Tensor lambda, Tensor? h0,
        Tensor h, Gradients into, Form form) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(dh, value, valueGate, gate, lambda, h0, h, into.Value, into.ValueGate, into.Gate, into.LambdaRows, into.Decay);
        GatedScan.RunBackward(RawStorage.Pointer<T>(dh), channelBroadcast, RawStorage.Pointer<T>(value), ValueGateOf<T>(valueGate, form),
            RawStorage.Pointer<T>(gate), T.CreateTruncating(form.GateFactor), Decay<T>(lambda, form), RawStorage.PointerOrNull<T>(h0),
            RawStorage.Pointer<T>(h), RawStorage.Pointer<T>(into.Value), RawStorage.PointerOrNull<T>(into.ValueGate), RawStorage.Pointer<T>(into.Gate),
            RawStorage.PointerOrNull<T>(into.LambdaRows), RawStorage.PointerOrNull<T>(into.Decay), form.Activation, Shape(value));
    }

    private static GatedScan.Shape Shape(Tensor value) => new((int)value.shape[0], (int)value.shape[1], (int)value.shape[2]);
}
