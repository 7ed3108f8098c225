using System.Numerics;
using Duality.Ir;
using Duality.Kernels;
using Duality.Structure;
using static Duality.Streaming.VectorMath;

namespace Duality.Streaming;

/// <summary>
/// Causal linear attention as its recurrent form, per head: S = a S + phi(k) v^T, o = phi(q)^T S, with
/// a = gamma (1 without decay) or sigmoid(w_h . x + b_h); a complex decay gamma e^(i theta) keeps S as
/// (re, im) and reads the real part. Heads are concatenated, then projected by W_O when given.
/// </summary>
internal sealed class LinearAttentionKernel<T> : StepKernel<T> where T : unmanaged, INumber<T>
{
    private readonly Attention node;
    private readonly StepKernel<T> source;
    private readonly T[] query, key, value, q, k, v, mixed, re, im;
    private readonly T[]? output, decayWeight, decayBias;
    private readonly T gamma, cos, sin;

    public LinearAttentionKernel(Attention node, StepKernel<T> source, int batch) : base(batch, node.OutputWidth)
    {
        (this.node, this.source) = (node, source);
        var w = node.Weights!;
        (query, key, value) = (Values<T>(w.Query), Values<T>(w.Key), Values<T>(w.Value));
        output = w.Output is { } o ? Values<T>(o) : null;
        (decayWeight, decayBias) = node.InputDependentDecay ? (Values<T>(w.DecayWeight!), Values<T>(w.DecayBias!)) : (null, null);
        gamma = T.CreateChecked(node.Decay ?? 1.0);
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
                    var decay = decayWeight is null ? gamma : Sigmoid(Dot<T>(decayWeight.AsSpan(h * x.Length, x.Length), x) + decayBias![h]);
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

/// <summary>
/// Causal softmax attention with a key-value cache per batch row and head, grown by doubling when a
/// sequence outlives its capacity (the only allocation, absent once the capacity covers the sequence).
/// </summary>
internal sealed class SoftmaxAttentionKernel<T> : StepKernel<T> where T : unmanaged, INumber<T>, IExponentialFunctions<T>
{
    private readonly Attention node;
    private readonly StepKernel<T> source;
    private readonly T[] query, key, value, q, k, v, mixed;
    private readonly T[]? output;
    private readonly T[][] keys, values;
    private readonly T scale;
    private T[] scores;
    private int steps;

    public SoftmaxAttentionKernel(Attention node, StepKernel<T> source, int batch, int capacity) : base(batch, node.OutputWidth)
    {
        (this.node, this.source) = (node, source);
        var w = node.Weights!;
        (query, key, value) = (Values<T>(w.Query), Values<T>(w.Key), Values<T>(w.Value));
        output = w.Output is { } o ? Values<T>(o) : null;
        (q, k) = (new T[node.Heads * node.KeyWidth], new T[node.Heads * node.KeyWidth]);
        (v, mixed) = (new T[node.Heads * node.ValueWidth], new T[node.Heads * node.ValueWidth]);
        keys = Enumerable.Range(0, batch * node.Heads).Select(_ => new T[capacity * node.KeyWidth]).ToArray();
        values = Enumerable.Range(0, batch * node.Heads).Select(_ => new T[capacity * node.ValueWidth]).ToArray();
        scores = new T[capacity];
        scale = T.One / T.CreateChecked(Math.Sqrt(node.KeyWidth));
    }

    public override void Reset() => steps = 0;

    public override void Step()
    {
        int dk = node.KeyWidth, dv = node.ValueWidth;
        if (steps == scores.Length) Grow();
        for (int b = 0; b < Batch; b++)
        {
            var x = source.Row(b);
            MatVec(query, null, x, q);
            MatVec(key, null, x, k);
            MatVec(value, null, x, v);
            for (int h = 0; h < node.Heads; h++)
            {
                var (cachedKeys, cachedValues) = (keys[b * node.Heads + h], values[b * node.Heads + h]);
                k.AsSpan(h * dk, dk).CopyTo(cachedKeys.AsSpan(steps * dk));
                v.AsSpan(h * dv, dv).CopyTo(cachedValues.AsSpan(steps * dv));
                var qh = q.AsSpan(h * dk, dk);
                var max = T.CreateChecked(double.NegativeInfinity);
                for (int s = 0; s <= steps; s++) max = T.Max(max, scores[s] = scale * Dot<T>(qh, cachedKeys.AsSpan(s * dk, dk)));
                var total = T.Zero;
                for (int s = 0; s <= steps; s++) total += scores[s] = T.Exp(scores[s] - max);
                var oh = mixed.AsSpan(h * dv, dv);
                oh.Clear();
                for (int s = 0; s <= steps; s++) AddScaled(oh, scores[s] / total, cachedValues.AsSpan(s * dv, dv));
            }
            if (output is null) mixed.CopyTo(Row(b));
            else MatVec(output, null, mixed, Row(b));
        }
        steps++;
    }

    private void Grow()
    {
        var capacity = Math.Max(1, 2 * scores.Length);
        for (int i = 0; i < keys.Length; i++)
        {
            Array.Resize(ref keys[i], capacity * node.KeyWidth);
            Array.Resize(ref values[i], capacity * node.ValueWidth);
        }
        Array.Resize(ref scores, capacity);
    }
}

/// <summary>
/// A gated RNN layer of the paper's form whose output gates are selections (as LowerAttention builds),
/// run by <see cref="GatedLayerLoop"/> one step at a time: projections onto the distinct input-gate rows (and
/// decay rows, for an input-dependent decay), O(neurons) state update and output products, and the readout from
/// the distinct readout columns.
/// </summary>
internal sealed unsafe class GatedLayerKernel<T> : StepKernel<T> where T : unmanaged, INumber<T>
{
    private readonly StepKernel<T> source;
    private readonly ActivationKind featureMap;
    private readonly Schedule<T> schedule;
    private readonly T[] valueWeight, valueBias, keyWeight, keyBias, decayWeight, decayBias, readout, value, key, decay, sums, state;

    public GatedLayerKernel(SelectionStructure structure, Schedule<T> schedule, ActivationKind featureMap, StepKernel<T> source, int batch,
        int width) : base(batch, width)
    {
        (this.source, this.schedule, this.featureMap) = (source, schedule, featureMap);
        (valueWeight, valueBias) = Split(structure.ValueRows);
        (keyWeight, keyBias) = Split(structure.KeyRows);
        (decayWeight, decayBias) = Split(structure.DecayRows);
        var columns = structure.ReadoutColumns;
        readout = Enumerable.Range(0, width).SelectMany(o => columns.Select(c => T.CreateChecked(c[o]))).ToArray();
        (value, key, decay) = (new T[batch * valueBias.Length], new T[batch * keyBias.Length], new T[batch * decayBias.Length]);
        (sums, state) = (new T[batch * schedule.Groups], new T[batch * schedule.StateSize]);
    }

    /// <summary>Rows [W | b] into W (row-major) and b.</summary>
    private static (T[] Weight, T[] Bias) Split(double[][] rows) =>
        (rows.SelectMany(r => r.Take(r.Length - 1)).Select(T.CreateChecked).ToArray(), rows.Select(r => T.CreateChecked(r[^1])).ToArray());

    public override void Reset() => Array.Clear(state);

    public override void Step()
    {
        var (values, keys, decays, groups) = (valueBias.Length, keyBias.Length, decayBias.Length, schedule.Groups);
        for (int b = 0; b < Batch; b++)
        {
            var x = source.Row(b);
            MatVec(valueWeight, valueBias, x, value.AsSpan(b * values, values));
            MatVec(keyWeight, keyBias, x, key.AsSpan(b * keys, keys));
            MatVec(decayWeight, decayBias, x, decay.AsSpan(b * decays, decays));
        }
        VectorMath.Apply(featureMap, key.AsSpan());
        VectorMath.Apply(ActivationKind.Sigmoid, decay.AsSpan());
        fixed (T* pv = value, pk = key, ps = sums, ph = state, pd = decay)
            GatedLayerLoop.Run(pv, pk, ps, schedule, Batch, 1, values, keys, ph, parallel: false, decays == 0 ? null : pd, decays);
        for (int b = 0; b < Batch; b++) MatVec(readout, null, sums.AsSpan(b * groups, groups), Row(b));
    }
}
