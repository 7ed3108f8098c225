using Duality.Execution;
using System.Numerics;
using Duality.Ir;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// h_t = lambda * h_{t-1} + value_t * f(gate_t) as one autograd operation: the fused forward pass
/// (<see cref="GatedScan.Run{T}"/>) and one reverse pass for the gradients of value, gate and lambda
/// (<see cref="GatedScan.RunBackward{T}"/>), where node-by-node execution records an activation, a product
/// and a scan, each with its own [batch, time, width] results and gradients. value, gate: [B, T, N];
/// lambda: [N]; h0: [N] or null, not trained.
/// </summary>
internal sealed class GatedScanFunction : SingleTensorFunction<GatedScanFunction>
{
    public override string Name => "GatedScan";

    public static Tensor Run(Tensor value, Tensor gate, Tensor lambda, Tensor? h0, ActivationKind activation) =>
        apply(value.contiguous(), gate.contiguous(), lambda.contiguous(), h0?.contiguous()!, activation);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (value, gate, lambda, h0, activation) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor, (ActivationKind)vars[4]);
        var h = LargeTensors.EmptyLike(value);
        if (value.dtype == ScalarType.Float32) Forward<float>(value, gate, lambda, h0, h, activation);
        else Forward<double>(value, gate, lambda, h0, h, activation);
        ctx.save_for_backward([value, gate, lambda, h0!, h]);
        ctx.save_data("activation", activation);
        ctx.save_data("lambdaGradient", lambda.requires_grad);
        return h;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        var (value, gate, lambda, h0, h) = (saved[0], saved[1], saved[2], saved[3] is { IsInvalid: false } s ? s : null, saved[4]);
        var (dh, channelBroadcast) = ChannelBroadcastGradient.Of(grad);
        var (activation, lambdaGradient) = ((ActivationKind)ctx.get_data("activation"), (bool)ctx.get_data("lambdaGradient"));
        var (dValue, dGate) = (LargeTensors.EmptyLike(value), LargeTensors.EmptyLike(gate));
        var lambdaRows = lambdaGradient ? empty(value.shape[0], value.shape[2], dtype: value.dtype) : null;
        if (value.dtype == ScalarType.Float32) Backward<float>(dh, channelBroadcast, value, gate, lambda, h0, h, dValue, dGate, lambdaRows, activation);
        else Backward<double>(dh, channelBroadcast, value, gate, lambda, h0, h, dValue, dGate, lambdaRows, activation);
        return [dValue, dGate, lambdaRows?.sum([0L])!, null!, null!];
    }

    private static unsafe void Forward<T>(Tensor value, Tensor gate, Tensor lambda, Tensor? h0, Tensor h, ActivationKind activation)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(value, gate, lambda, h0, h);
        GatedScan.Run(RawStorage.Pointer<T>(value), RawStorage.Pointer<T>(gate), T.One, GatedScan.Decay<T>.Fixed(RawStorage.Pointer<T>(lambda)),
            RawStorage.PointerOrNull<T>(h0),
            RawStorage.Pointer<T>(h), default, activation, Shape(value));
    }

    private static unsafe void Backward<T>(Tensor dh, bool channelBroadcast, Tensor value, Tensor gate, Tensor lambda, Tensor? h0, Tensor h,
        Tensor dValue, Tensor dGate, Tensor? lambdaRows, ActivationKind activation) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(dh, value, gate, lambda, h0, h, dValue, dGate, lambdaRows);
        GatedScan.RunBackward(RawStorage.Pointer<T>(dh), channelBroadcast, RawStorage.Pointer<T>(value), RawStorage.Pointer<T>(gate),
            RawStorage.Pointer<T>(lambda), RawStorage.PointerOrNull<T>(h0), RawStorage.Pointer<T>(h), RawStorage.Pointer<T>(dValue),
            RawStorage.Pointer<T>(dGate), RawStorage.PointerOrNull<T>(lambdaRows), activation, Shape(value));
    }

    private static GatedScan.Shape Shape(Tensor value) => new((int)value.shape[0], (int)value.shape[1], (int)value.shape[2]);
}
