using System.Numerics;
using Duality.Ir;
using static Duality.Streaming.VectorMath;

namespace Duality.Streaming;

/// <summary>
/// One node advanced by one token over preallocated buffers. Output: [batch, width] row-major, written
/// by <see cref="Step"/> from the sources' outputs of the same step. Nothing is allocated per step.
/// </summary>
internal abstract class StepKernel<T>(int batch, int width) where T : unmanaged, INumber<T>
{
    public T[] Output { get; } = new T[batch * width];

    public int Batch { get; } = batch;

    public int Width { get; } = width;

    public Span<T> Row(int b) => Output.AsSpan(b * Width, Width);

    public abstract void Step();

    /// <summary>Back to the state before the first step.</summary>
    public virtual void Reset() { }
}

/// <summary>The caller writes the step's values into <see cref="StepKernel{T}.Output"/>.</summary>
internal sealed class InputKernel<T>(int batch, int width) : StepKernel<T>(batch, width) where T : unmanaged, INumber<T>
{
    public override void Step() { }
}

internal sealed class ProjectionKernel<T>(Projection node, StepKernel<T> source, int batch) : StepKernel<T>(batch, node.OutFeatures)
    where T : unmanaged, INumber<T>
{
    private readonly T[] weight = Values<T>(node.Weights!.Weight);
    private readonly T[]? bias = node.Weights!.Bias is { } b ? Values<T>(b) : null;

    public override void Step()
    {
        for (int b = 0; b < Batch; b++) MatVec(weight, bias, source.Row(b), Row(b));
    }
}

/// <summary>y = value * f(gate); also Add (a + b), Activation and Scale as elementwise maps.</summary>
internal sealed class ElementwiseKernel<T>(Node node, StepKernel<T> left, StepKernel<T>? right, int batch)
    : StepKernel<T>(batch, left.Width) where T : unmanaged, INumber<T>
{
    public override void Step()
    {
        var y = Output.AsSpan();
        var a = left.Output.AsSpan();
        switch (node)
        {
            case Gate g:
                var gate = right!.Output.AsSpan();
                for (int i = 0; i < y.Length; i++) y[i] = a[i] * Apply(g.Activation, gate[i]);
                break;
            case Add:
                var b = right!.Output.AsSpan();
                for (int i = 0; i < y.Length; i++) y[i] = a[i] + b[i];
                break;
            case Activation f:
                a.CopyTo(y);
                VectorMath.Apply(f.Kind, y);
                break;
            case Scale s:
                var factor = T.CreateChecked(s.Factor);
                for (int i = 0; i < y.Length; i++) y[i] = factor * a[i];
                break;
        }
    }
}

internal sealed class ConcatKernel<T>(StepKernel<T>[] parts, int batch) : StepKernel<T>(batch, parts.Sum(p => p.Width))
    where T : unmanaged, INumber<T>
{
    public override void Step()
    {
        for (int b = 0; b < Batch; b++)
        {
            var row = Row(b);
            foreach (var part in parts)
            {
                part.Row(b).CopyTo(row);
                row = row.Slice(part.Width);
            }
        }
    }
}

internal sealed class SliceKernel<T>(Slice node, StepKernel<T> source, int batch) : StepKernel<T>(batch, node.Length)
    where T : unmanaged, INumber<T>
{
    public override void Step()
    {
        for (int b = 0; b < Batch; b++) source.Row(b).Slice(node.Start, node.Length).CopyTo(Row(b));
    }
}

/// <summary>LayerNorm (centred) and RmsNorm over each row.</summary>
internal sealed class NormKernel<T>(StepKernel<T> source, int batch, double epsilon, bool centre, DoubleTensor? gain, DoubleTensor? bias)
    : StepKernel<T>(batch, source.Width) where T : unmanaged, INumber<T>, IRootFunctions<T>
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

/// <summary>h = lambda h + u, real or complex (kept as re, im), or h = sigmoid(d) h + u with a decay branch.</summary>
internal sealed class RecurrenceKernel<T> : StepKernel<T> where T : unmanaged, INumber<T>
{
    private readonly LinearRecurrence node;
    private readonly StepKernel<T> source;
    private readonly StepKernel<T>? decay;
    private readonly T[] lambdaRe, lambdaIm, initialRe, initialIm, re, im;

    public RecurrenceKernel(LinearRecurrence node, StepKernel<T> source, StepKernel<T>? decay, int batch) : base(batch, node.OutputWidth)
    {
        (this.node, this.source, this.decay) = (node, source, decay);
        int n = node.Width;
        var complex = node.State == StateKind.Complex;
        (lambdaRe, lambdaIm) = (new T[n], new T[n]);
        (initialRe, initialIm) = (new T[n], new T[n]);
        for (int k = 0; k < n; k++)
        {
            if (node.Lambda is { } l) (lambdaRe[k], lambdaIm[k]) = complex ? (T.CreateChecked(l[k, 0]), T.CreateChecked(l[k, 1])) : (T.CreateChecked(l[k]), T.Zero);
            if (node.InitialState is { } h0) (initialRe[k], initialIm[k]) = complex ? (T.CreateChecked(h0[k, 0]), T.CreateChecked(h0[k, 1])) : (T.CreateChecked(h0[k]), T.Zero);
        }
        (re, im) = (new T[batch * n], new T[batch * n]);
        Reset();
    }

    public override void Reset()
    {
        for (int b = 0; b < Batch; b++)
        {
            initialRe.CopyTo(re, b * node.Width);
            initialIm.CopyTo(im, b * node.Width);
        }
    }

    public override void Step()
    {
        int n = node.Width;
        var complex = node.State == StateKind.Complex;
        for (int b = 0; b < Batch; b++)
        {
            var u = source.Row(b);
            var hr = re.AsSpan(b * n, n);
            var hi = im.AsSpan(b * n, n);
            if (decay is not null)
            {
                var d = decay.Row(b);
                for (int k = 0; k < n; k++) hr[k] = Sigmoid(d[d.Length == 1 ? 0 : k]) * hr[k] + u[k];
            }
            else if (!complex)
                for (int k = 0; k < n; k++) hr[k] = lambdaRe[k] * hr[k] + u[k];
            else
                for (int k = 0; k < n; k++)
                    (hr[k], hi[k]) = (lambdaRe[k] * hr[k] - lambdaIm[k] * hi[k] + u[k], lambdaRe[k] * hi[k] + lambdaIm[k] * hr[k]);
            var y = Row(b);
            hr.CopyTo(y);
            if (node.OutputWidth == 2 * n) hi.CopyTo(y.Slice(n));
        }
    }
}
