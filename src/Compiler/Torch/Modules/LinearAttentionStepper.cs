using System.Numerics;
using Duality.Ir;
using Duality.Kernels;
using Duality.Streaming;
using static Duality.Streaming.VectorMath;

namespace Duality.Torch;

/// <summary>
/// Causal linear attention as its recurrent form, per head: S = a S + phi(k) v^T, o = phi(q)^T S, with
/// a = gamma (1 without decay) or sigmoid(w_h . x + b_h); a complex decay gamma e^(i theta) keeps S as
/// (re, im) and reads the real part. Heads are concatenated, then projected by W_O when given.
/// </summary>
internal sealed class LinearAttentionStepper<T> : Stepper<T> where T : unmanaged, INumber<T>
{
    private readonly Attention node;
    private readonly Stepper<T> source;
    private readonly T[] query, key, value, q, k, v, mixed, re, im;
    private readonly T[]? output, decayWeight, decayBias, headDecays;
    private readonly T gamma, cos, sin;

    public LinearAttentionStepper(Attention node, Stepper<T> source, int batch) : base(batch, node.OutputWidth)
    {
        (this.node, this.source) = (node, source);
        var w = node.Weights!;
        (query, key, value) = (Values<T>(w.Query), Values<T>(w.Key), Values<T>(w.Value));
        output = w.Output is { } o ? Values<T>(o) : null;
        (decayWeight, decayBias) = node.InputDependentDecay ? (Values<T>(w.DecayWeight!), Values<T>(w.DecayBias!)) : (null, null);
        gamma = T.CreateChecked(node.Decay ?? 1.0);
        headDecays = node.HeadDecays is { } g ? Values<T>(g) : null;
        (cos, sin) = (T.CreateChecked(Math.Cos(node.DecayPhase ?? 0)), T.CreateChecked(Math.Sin(node.DecayPhase ?? 0)));
        int keys = node.Heads * node.KeyWidth, values = node.Heads * node.ValueWidth;
        (q, k, v, mixed) = (new T[keys], new T[keys], new T[values], new T[values]);
        re = new T[batch * node.Heads * node.KeyWidth * node.ValueWidth];
        im = new T[node.DecayPhase is null ? 0 : re.Length];
    }

    public override void Reset()
    {
        Array.Clear(re);
        Array.Clear(im);
    }

    public override unsafe void Step()
    {
        int dk = node.KeyWidth, dv = node.ValueWidth, block = dk * dv;
        for (int b = 0; b < Batch; b++)
        {
            var x = source.Row(b);
            MatVec(query, null, x, q);
            MatVec(key, null, x, k);
            MatVec(value, null, x, v);
            VectorMath.Apply(node.FeatureMap, q.AsSpan());
            VectorMath.Apply(node.FeatureMap, k.AsSpan());
            fixed (T* pq = q, pk = k, pv = v, po = mixed, pre = re, pim = im)
                for (int h = 0; h < node.Heads; h++)
                {
                    var decay = headDecays is not null ? headDecays[h] : decayWeight is null ? gamma : Sigmoid(Dot<T>(decayWeight.AsSpan(h * x.Length, x.Length), x) + decayBias![h]);
                    var offset = (b * node.Heads + h) * block;
                    if (im.Length > 0)
                        RecurrentAttentionStep.Rotate(pre + offset, pim + offset, decay * cos, decay * sin, pk + h * dk, pv + h * dv, pq + h * dk,
                            po + h * dv, dk, dv, T.One, accumulate: false);
                    else
                        RecurrentAttentionStep.Advance(pre + offset, decay, pk + h * dk, pv + h * dv, pq + h * dk, po + h * dv, dk, dv, T.One,
                            accumulate: false);
                }
            if (output is null) mixed.CopyTo(Row(b));
            else MatVec(output, null, mixed, Row(b));
        }
    }
}
