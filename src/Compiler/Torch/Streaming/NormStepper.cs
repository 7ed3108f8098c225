using System.Numerics;
using Duality.Ir;
using static Duality.Streaming.VectorMath;

namespace Duality.Streaming;

/// <summary>LayerNorm (centred) and RmsNorm over each row, or over each of its groups of consecutive features (GroupNorm).</summary>
internal sealed class NormStepper<T>(Stepper<T> source, int batch, double epsilon, bool centre, DoubleTensor? gain, DoubleTensor? bias,
    int groups = 1)
    : Stepper<T>(batch, source.Width) where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly T[]? gain = gain is null ? null : Values<T>(gain);
    private readonly T[]? bias = bias is null ? null : Values<T>(bias);
    private readonly T epsilon = T.CreateChecked(epsilon);

    public override void Step()
    {
        var groupWidth = Width / groups;
        for (int b = 0; b < Batch; b++)
            for (int from = 0; from < Width; from += groupWidth)
            {
                var x = source.Row(b).Slice(from, groupWidth);
                var y = Row(b).Slice(from, groupWidth);
                var (mean, scale) = Reference.NormStatistics.Of<T>(x, centre, epsilon);
                for (int c = 0; c < x.Length; c++)
                    y[c] = (x[c] - mean) * scale * (gain is null ? T.One : gain[from + c]) + (bias is null ? T.Zero : bias[from + c]);
            }
    }
}
