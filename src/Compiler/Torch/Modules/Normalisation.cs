using Duality.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// (x - mean) / sqrt(mean((x - mean)^2) + epsilon) over each of <c>groups</c> consecutive groups of the last axis
/// (mean = 0 without centring): LayerNorm and RmsNorm are one group, GroupNorm several. x: [batch, time, width].
/// </summary>
internal static class Normalisation
{
    /// <summary>
    /// The norm times <paramref name="gain"/> plus <paramref name="bias"/> (either null for none): on the CPU in float32 and
    /// float64, outside TorchOps, one fused pass (<see cref="Kernels.NormFunction"/>) with and without gradients; the
    /// composite form otherwise.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor? gain, Tensor? bias, int groups, bool centre, double epsilon, ExecutionMode execution)
    {
        if (execution != ExecutionMode.TorchOps && x.device.type == DeviceType.CPU && x.dtype is ScalarType.Float32 or ScalarType.Float64
            && x.dim() == 3)
            return Kernels.NormFunction.Run(x, gain, bias, new Kernels.NormFunction.Form(groups, centre, epsilon));
        var normalised = Normalise(x, groups, centre, epsilon);
        return gain is null ? normalised : bias is null ? normalised * gain : (normalised * gain).Plus(bias);
    }

    /// <summary>
    /// The norm at any magnitude: each group is taken at x 2^-k, 2^k above its max |x| (beyond 1), with epsilon 2^-2k, the
    /// same function with sums that stay finite; the scaling is exact, and constant for the gradient (the function does
    /// not depend on it).
    /// </summary>
    public static Tensor Normalise(Tensor x, int groups, bool centre, double epsilon)
    {
        var grouped = groups == 1 ? x : x.reshape(x.shape[0], x.shape[1], groups, x.shape[2] / groups);
        var unit = grouped.detach().abs().amax([-1L], keepdim: true).clamp_min(HeldScalars.One).log2_().floor_().add_(HeldScalars.One, HeldScalars.One).neg_().exp2_();
        var scaled = grouped * unit;
        var centred = centre ? scaled - scaled.mean([-1L], keepdim: true) : scaled;
        var normalised = centred * centred.Squared().mean([-1L], keepdim: true).Plus(unit.Squared().Times(epsilon)).rsqrt();
        return groups == 1 ? normalised : normalised.reshape(x.shape);
    }
}
