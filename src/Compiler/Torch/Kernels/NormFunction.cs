using System.Numerics;
using Duality.Execution;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// A layer, RMS or group norm with its gain and bias as one autograd operation over <see cref="NormRows"/>: one pass
/// forward and one backward, where the composite form records a mean, a subtraction, a square, a second mean, a
/// reciprocal square root and up to three products and sums, each with its own [batch, time, width] result and gradient.
/// x: [batch, time, width]; gain, bias: [width] or null.
/// </summary>
internal sealed class NormFunction : SingleTensorFunction<NormFunction>
{
    /// <summary>The groups of each row and the norm's constants.</summary>
    public sealed record Form(int Groups, bool Centre, double Epsilon);

    public override string Name => "Norm";

    public static Tensor Run(Tensor x, Tensor? gain, Tensor? bias, Form form)
    {
        var input = x.contiguous();
        if (!GradientGate.Records(input, gain, bias)) return Normalise(input, gain, bias, form).Y;
        return apply(GradientGate.Through(input), gain!, bias!, form);
    }

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (x, gain, bias, form) = ((Tensor)vars[0], vars[1] as Tensor, vars[2] as Tensor, (Form)vars[3]);
        var (y, mean, scale) = Normalise(x, gain, bias, form);
        ctx.save_for_backward([x, gain!, mean, scale]);
        ctx.save_data("form", form);
        ctx.save_data("bias", bias is not null);
        return y;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () => ReversePass(ctx, grad));

    private static List<Tensor> ReversePass(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        var (x, gain, mean, scale) = (saved[0], saved[1] is { IsInvalid: false } g ? g : null, saved[2], saved[3]);
        var (form, hasBias) = ((Form)ctx.get_data("form"), (bool)ctx.get_data("bias"));
        var dy = grad.contiguous();
        var shape = Shape(x, form);
        var ranges = NormRows.Ranges(shape);
        var dx = LargeTensors.EmptyLike(x);
        var gainRows = gain is null ? null : empty(ranges, shape.Width, dtype: x.dtype);
        var biasRows = hasBias ? empty(ranges, shape.Width, dtype: x.dtype) : null;
        if (x.dtype == ScalarType.Float32) Backward<float>(dy, x, gain, mean, scale, dx, gainRows, biasRows, shape, ranges);
        else Backward<double>(dy, x, gain, mean, scale, dx, gainRows, biasRows, shape, ranges);
        return [dx, gainRows?.sum([0L])!, biasRows?.sum([0L])!, null!];
    }

    private static NormRows.Shape Shape(Tensor x, Form form) =>
        new(x.shape[0] * x.shape[1], (int)x.shape[2], form.Groups, form.Centre, form.Epsilon);

    private static (Tensor Y, Tensor Mean, Tensor Scale) Normalise(Tensor x, Tensor? gain, Tensor? bias, Form form)
    {
        var shape = Shape(x, form);
        var y = LargeTensors.EmptyLike(x);
        var (mean, scale) = (empty(shape.Rows, form.Groups, dtype: x.dtype), empty(shape.Rows, form.Groups, dtype: x.dtype));
        if (x.dtype == ScalarType.Float32) Forward<float>(x, gain, bias, y, mean, scale, shape);
        else Forward<double>(x, gain, bias, y, mean, scale, shape);
        return (y, mean, scale);
    }

    private static unsafe void Forward<T>(Tensor x, Tensor? gain, Tensor? bias, Tensor y, Tensor mean, Tensor scale, NormRows.Shape shape)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (g, b) = (gain?.contiguous(), bias?.contiguous());
        using var alive = RawStorage.KeepAlive(x, g, b, y, mean, scale);
        NormRows.Forward(RawStorage.Pointer<T>(x), RawStorage.PointerOrNull<T>(g), RawStorage.PointerOrNull<T>(b), RawStorage.Pointer<T>(y),
            RawStorage.Pointer<T>(mean), RawStorage.Pointer<T>(scale), shape);
    }

    private static unsafe void Backward<T>(Tensor dy, Tensor x, Tensor? gain, Tensor mean, Tensor scale, Tensor dx, Tensor? gainRows, Tensor? biasRows,
        NormRows.Shape shape, int ranges) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var g = gain?.contiguous();
        using var alive = RawStorage.KeepAlive(dy, x, g, mean, scale, dx, gainRows, biasRows);
        NormRows.Backward(RawStorage.Pointer<T>(dy), RawStorage.Pointer<T>(x), RawStorage.PointerOrNull<T>(g), RawStorage.Pointer<T>(mean),
            RawStorage.Pointer<T>(scale), RawStorage.Pointer<T>(dx), RawStorage.PointerOrNull<T>(gainRows), RawStorage.PointerOrNull<T>(biasRows),
            shape, ranges);
    }
}
