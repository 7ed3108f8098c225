using System.Numerics;
using Duality.Ir;
using Duality.Kernels;
using Duality.Streaming;
using static Duality.Streaming.VectorMath;

namespace Duality.Torch;

/// <summary>
/// Causal softmax attention with a key-value cache per batch row and head, grown by doubling when a
/// sequence outlives its capacity (the only allocation, absent once the capacity covers the sequence).
/// </summary>
internal sealed class SoftmaxAttentionStepper<T> : Stepper<T> where T : unmanaged, INumber<T>, IExponentialFunctions<T>
{
    private readonly Attention node;
    private readonly Stepper<T> source;
    private readonly T[] query, key, value, q, k, v, mixed;
    private readonly T[]? output;
    private readonly T[][] keys, values;
    private readonly T scale;
    private T[] scores;
    private int steps;

    public SoftmaxAttentionStepper(Attention node, Stepper<T> source, int batch, int capacity) : base(batch, node.OutputWidth)
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
