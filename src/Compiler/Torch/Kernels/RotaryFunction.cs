using System.Numerics;
using Duality.Execution;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// The rotary embedding's rotation as one autograd operation over <see cref="PairRotation"/>: one pass forward, and its
/// gradient, the rotation by the negated angles, one pass back. x: [batch, time, heads head width]; cosines, sines: the
/// pass's tables [time, head width], (cos, cos) and (-sin, sin) per pair, in x's dtype.
/// </summary>
internal sealed class RotaryFunction : SingleTensorFunction<RotaryFunction>
{
    public override string Name => "Rotary";

    public static Tensor Run(Tensor x, Tensor cosines, Tensor sines, int heads)
    {
        var input = x.contiguous();
        return GradientGate.Records(input) ? apply(GradientGate.Through(input), cosines, sines, heads) : Rotate(input, cosines, sines, heads);
    }

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (x, cosines, sines, heads) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (int)vars[3]);
        ctx.save_for_backward([cosines, sines]);
        ctx.save_data("heads", heads);
        return Rotate(x, cosines, sines, heads);
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () =>
    {
        var saved = ctx.get_saved_variables();
        return [Rotate(grad.contiguous(), saved[0], saved[1].neg(), (int)ctx.get_data("heads")), null!, null!, null!];
    });

    private static Tensor Rotate(Tensor x, Tensor cosines, Tensor sines, int heads)
    {
        var y = LargeTensors.EmptyLike(x);
        if (x.dtype == ScalarType.Float32) Rotate<float>(x, cosines, sines, y, heads);
        else Rotate<double>(x, cosines, sines, y, heads);
        return y;
    }

    private static unsafe void Rotate<T>(Tensor x, Tensor cosines, Tensor sines, Tensor y, int heads) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(x, cosines, sines, y);
        PairRotation.Run(RawStorage.Pointer<T>(x), RawStorage.Pointer<T>(cosines), RawStorage.Pointer<T>(sines), RawStorage.Pointer<T>(y),
            x.shape[0] * x.shape[1], (int)x.shape[1], heads, (int)cosines.shape[1]);
    }
}
