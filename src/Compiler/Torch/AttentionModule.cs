using Duality.Ir;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// Multi-head attention; x: [batch, time, in]. Per head, q, k: [batch, heads, time, key],
/// v: [batch, heads, time, value].
///   linear:  y_t = sum_{s} w(t,s) (phi(q_t) . phi(k_s)) v_s, w = gamma^(t-s) on s &lt;= t when causal
///   softmax: y_t = sum_{s} softmax_s(q_t . k_s / sqrt(key)) v_s, s &lt;= t when causal
/// Step form (causal only): linear keeps S = sum_s w v_s phi(k_s)^T [batch, heads, value, key];
/// softmax keeps every key and value seen so far.
/// </summary>
internal sealed class AttentionModule : NodeModule
{
    private readonly Attention node;
    private readonly Parameter query, key, value;
    private readonly Parameter? output;

    public AttentionModule(Attention node, ScalarType dtype) : base(node.Name)
    {
        this.node = node;
        var w = node.Weights!;
        register_parameter("query", query = Convert.Parameter(w.Query, dtype));
        register_parameter("key", key = Convert.Parameter(w.Key, dtype));
        register_parameter("value", value = Convert.Parameter(w.Value, dtype));
        if (w.Output is { } o) register_parameter("output", output = Convert.Parameter(o, dtype));
    }

    private bool IsLinear => node.Kernel == AttentionKernel.Linear;

    public override bool IsStateful => true;

    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        long batch = x.shape[0], time = x.shape[1];
        var (q, k, v) = (Heads(x, query, node.KeyWidth), Heads(x, key, node.KeyWidth), Heads(x, value, node.ValueWidth));
        Tensor mixed;
        if (IsLinear)
        {
            var scores = Convert.Apply(node.FeatureMap, q).matmul(Convert.Apply(node.FeatureMap, k).transpose(-2, -1));
            if (node.Causal) scores = scores * DecayMask(time, x.dtype, x.device);
            mixed = scores.matmul(v);
        }
        else
        {
            var scores = q.matmul(k.transpose(-2, -1)) / Math.Sqrt(node.KeyWidth);
            if (node.Causal)
                scores = scores.masked_fill(ones(time, time, dtype: ScalarType.Bool, device: x.device).triu(1), double.NegativeInfinity);
            mixed = scores.softmax(-1).matmul(v);
        }
        return Output(mixed.transpose(1, 2).reshape(batch, time, node.Heads * node.ValueWidth));
    }

    public override Tensor[] InitialState(long batch)
    {
        var (dtype, device) = (query.dtype, query.device);
        return IsLinear
            ? [zeros(batch, node.Heads, node.ValueWidth, node.KeyWidth, dtype: dtype, device: device)]
            : [zeros(batch, node.Heads, 0, node.KeyWidth, dtype: dtype, device: device),
               zeros(batch, node.Heads, 0, node.ValueWidth, dtype: dtype, device: device)];
    }

    public override (Tensor Output, Tensor[] State) Step(IReadOnlyList<Tensor> inputs, Tensor[] state)
    {
        var x = inputs[0];
        long batch = x.shape[0];
        var (q, k, v) = (Heads(x, query, node.KeyWidth), Heads(x, key, node.KeyWidth), Heads(x, value, node.ValueWidth));
        if (IsLinear)
        {
            var outer = v.transpose(-2, -1).matmul(Convert.Apply(node.FeatureMap, k));
            var memory = node.Decay is { } gamma ? state[0] * gamma + outer : state[0] + outer;
            var y = memory.matmul(Convert.Apply(node.FeatureMap, q).transpose(-2, -1)).squeeze(-1);
            return (Output(y.reshape(batch, 1, node.Heads * node.ValueWidth)), [memory]);
        }
        var keys = cat([state[0], k], 2);
        var values = cat([state[1], v], 2);
        var weights = (q.matmul(keys.transpose(-2, -1)) / Math.Sqrt(node.KeyWidth)).softmax(-1);
        var mixed = weights.matmul(values).squeeze(2);
        return (Output(mixed.reshape(batch, 1, node.Heads * node.ValueWidth)), [keys, values]);
    }

    public override Node ReadBack(Node node) =>
        ((Attention)node) with
        {
            Weights = new AttentionWeights(Convert.ToValues(query), Convert.ToValues(key), Convert.ToValues(value),
                output is null ? null : Convert.ToValues(output)),
        };

    /// <summary>[batch, time, in] -> [batch, heads, time, width].</summary>
    private Tensor Heads(Tensor x, Tensor weight, int width) =>
        nn.functional.linear(x, weight).view(x.shape[0], x.shape[1], node.Heads, width).transpose(1, 2);

    private Tensor Output(Tensor y) => output is null ? y : nn.functional.linear(y, output);

    /// <summary>D[t, s] = gamma^(t-s) for s &lt;= t, else 0 (gamma = 1 without decay).</summary>
    private Tensor DecayMask(long time, ScalarType dtype, Device device)
    {
        var steps = arange(time, dtype: ScalarType.Float64, device: device);
        var lag = steps.unsqueeze(1) - steps.unsqueeze(0);
        var logGamma = Math.Log(node.Decay ?? 1.0);
        var mask = where(lag >= 0, (lag.clamp_min(0) * logGamma).exp(), zeros_like(lag));
        return mask.to_type(dtype);
    }
}
