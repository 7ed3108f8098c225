using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// (x - mean) / sqrt(mean((x - mean)^2) + epsilon) over each of <c>groups</c> consecutive groups of the last axis
/// (mean = 0 without centring): LayerNorm and RmsNorm are one group, GroupNorm several. x: [batch, time, width].
/// </summary>
internal static class Normalisation
{
    public static Tensor Normalise(Tensor x, int groups, bool centre, double epsilon)
    {
        var grouped = groups == 1 ? x : x.reshape(x.shape[0], x.shape[1], groups, x.shape[2] / groups);
        var centred = centre ? grouped - grouped.mean([-1L], keepdim: true) : grouped;
        var normalised = centred * (centred.square().mean([-1L], keepdim: true) + epsilon).rsqrt();
        return groups == 1 ? normalised : normalised.reshape(x.shape);
    }
}
