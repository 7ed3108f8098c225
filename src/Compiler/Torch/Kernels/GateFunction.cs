using System.Numerics;
using Duality.Execution;
using Duality.Ir;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// value * f(gate) as one autograd operation over <see cref="GateProduct"/>: one pass forward and one backward, where
/// the composite form records the activation and the product, each with its own result and gradients.
/// </summary>
internal sealed class GateFunction : SingleTensorFunction<GateFunction>
{
    public override string Name => "Gate";

    public static Tensor Run(Tensor value, Tensor gate, ActivationKind kind)
    {
        var (v, g) = (value.contiguous(), gate.contiguous());
        if (!GradientGate.Records(v, g)) return Forward(v, g, kind);
        return apply(GradientGate.Through(v), GradientGate.Through(g), kind);
    }

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (value, gate, kind) = ((Tensor)vars[0], (Tensor)vars[1], (ActivationKind)vars[2]);
        ctx.save_for_backward([value, gate]);
        ctx.save_data("kind", kind);
        return Forward(value, gate, kind);
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () => ReversePass(ctx, grad));

    private static List<Tensor> ReversePass(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        var (value, gate, kind) = (saved[0], saved[1], (ActivationKind)ctx.get_data("kind"));
        var dy = grad.contiguous();
        var (dValue, dGate) = (LargeTensors.EmptyLike(value), LargeTensors.EmptyLike(gate));
        if (value.dtype == ScalarType.Float32) Backward<float>(dy, value, gate, dValue, dGate, kind);
        else Backward<double>(dy, value, gate, dValue, dGate, kind);
        return [dValue, dGate, null!];
    }

    private static Tensor Forward(Tensor value, Tensor gate, ActivationKind kind)
    {
        var y = LargeTensors.EmptyLike(value);
        if (value.dtype == ScalarType.Float32) Forward<float>(value, gate, y, kind);
        else Forward<double>(value, gate, y, kind);
        return y;
    }

    private static unsafe void Forward<T>(Tensor value, Tensor gate, Tensor y, ActivationKind kind) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(value, gate, y);
        GateProduct.Forward(RawStorage.Pointer<T>(value), RawStorage.Pointer<T>(gate), RawStorage.Pointer<T>(y), value.numel(), kind);
    }

    private static unsafe void Backward<T>(Tensor dy, Tensor value, Tensor gate, Tensor dValue, Tensor dGate, ActivationKind kind)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(dy, value, gate, dValue, dGate);
        GateProduct.Backward(RawStorage.Pointer<T>(dy), RawStorage.Pointer<T>(value), RawStorage.Pointer<T>(gate), RawStorage.Pointer<T>(dValue),
            RawStorage.Pointer<T>(dGate), value.numel(), kind);
    }
}
