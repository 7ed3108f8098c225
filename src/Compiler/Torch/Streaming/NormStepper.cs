using System.Numerics;
using Duality.Ir;
using static Duality.Streaming.VectorMath;

namespace Duality.Streaming;

/// <summary>LayerNorm (centred) and RmsNorm over each row.</summary>
internal sealed class NormStepper<T>(Stepper<T> source, int batch, double epsilon, bool centre, DoubleTensor? gain, DoubleTensor? bias)
    : Stepper<T>(batch, source.Width) where T : unmanaged, INumber<T>, IRootFunctions<T>
{
    private readonly T[]? gain = gain is null ? null : Values<T>(gain);
    private readonly T[]? bias = bias is null ? null : Values<T>(bias);
    private readonly T epsilon = T.CreateChecked(epsilon);

    public override void Step()
    {
        var width = T.CreateChecked(Width);
        for (int b = 0; b < Batch; b++)
        {
            var x = source.Row(b);
            var y = Row(b);
            var mean = T.Zero;
            if (centre)
            {
                foreach (var v in x) mean += v;
                mean /= width;
            }
            var square = T.Zero;
            foreach (var v in x) square += (v - mean) * (v - mean);
            var scale = T.One / T.Sqrt(square / width + epsilon);
            for (int c = 0; c < x.Length; c++)
                y[c] = (x[c] - mean) * scale * (gain is null ? T.One : gain[c]) + (bias is null ? T.Zero : bias[c]);
        }
    }
}
