using Duality.Execution;
using Duality.Ir;
using Duality.Kernels;
using static Duality.Streaming.VectorMath;
using Duality.Streaming;
using System.Numerics;
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
    private readonly Parameter? output, decayWeight, decayBias;

    private readonly ExecutionMode execution;

    public AttentionModule(Attention node, ScalarType dtype, ExecutionMode execution) : base(node.Name)
    {
        this.node = node;
        this.execution = execution;
        var w = node.Weights!;
        register_parameter("query", query = TensorValues.Parameter(w.Query, dtype));
        register_parameter("key", key = TensorValues.Parameter(w.Key, dtype));
        register_parameter("value", value = TensorValues.Parameter(w.Value, dtype));
        if (w.Output is { } o) register_parameter("output", output = TensorValues.Parameter(o, dtype));
        if (node.InputDependentDecay)
        {
            register_parameter("decay_weight", decayWeight = TensorValues.Parameter(w.DecayWeight!, dtype));
            register_parameter("decay_bias", decayBias = TensorValues.Parameter(w.DecayBias!, dtype));
        }
    }

    private bool IsLinear => node.Kernel == AttentionKernel.Linear;

    internal Attention Node => node;

    internal Tensor Query => query;

    internal Tensor Key => key;

    internal Tensor Value => value;

    internal Tensor? OutputWeight => output;

    public override bool IsStateful => true;

    /// <summary>Whether a forward pass runs the fused recurrent loop: linear and causal, on the CPU, without gradients.</summary>
    private bool RunsRecurrent(Tensor x) =>
        IsLinear && node.Causal && execution != ExecutionMode.TorchOps && x.device.type == DeviceType.CPU && !is_grad_enabled();

    /// <summary>The fused loop writing its projections, heads and output into kept buffers.</summary>
    public override Tensor Forward(IReadOnlyList<Tensor> inputs, KeptBuffers kept) =>
        RunsRecurrent(inputs[0]) ? RecurrentAttention.Run(this, inputs[0], kept).alias() : Forward(inputs);

    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        long batch = x.shape[0], time = x.shape[1];
        if (RunsRecurrent(x)) return RecurrentAttention.Run(this, x, null);
        var (q, k, v) = (Heads(x, query, node.KeyWidth), Heads(x, key, node.KeyWidth), Heads(x, value, node.ValueWidth));
        Tensor mixed;
        if (IsLinear && !node.Causal)
            // sum over every s: phi(q_t) (phi(K)^T V), O(T) by associativity
            mixed = TensorValues.Apply(node.FeatureMap, q).matmul(TensorValues.Apply(node.FeatureMap, k).transpose(-2, -1).matmul(v));
        else if (IsLinear && node.DecayPhase is null && execution != ExecutionMode.TorchOps && time > Chunk)
            mixed = GatedLinearAttentionChunks.Run(TensorValues.Apply(node.FeatureMap, q), TensorValues.Apply(node.FeatureMap, k), v,
                LogDecays(x), null, null, Chunk).Output;
        else if (!IsLinear && execution != ExecutionMode.TorchOps && x.device.type == DeviceType.CPU)
            mixed = TiledAttention.Softmax(q, k, v, node.Causal, 1 / Math.Sqrt(node.KeyWidth));
        else
        {
            GuardScores(batch, time, x.dtype);
            if (IsLinear)
            {
                // causal: later steps are filled, never multiplied, so a non-finite value there cannot reach earlier outputs
                var scores = CausalMask.Fill(TensorValues.Apply(node.FeatureMap, q).matmul(TensorValues.Apply(node.FeatureMap, k).transpose(-2, -1)), 0);
                if (node.InputDependentDecay) scores = scores * GatedDecayMask(x);
                else if (node.HeadDecays is not null) scores = scores * HeadDecayMask(x);
                else if (node.Decay is not null) scores = scores * DecayMask(time, x.dtype, x.device);
                mixed = CausalMask.Product(scores, v);
            }
            else
            {
                var scores = q.matmul(k.transpose(-2, -1)).Over(Math.Sqrt(node.KeyWidth));
                if (node.Causal) scores = CausalMask.Fill(scores, double.NegativeInfinity);
                var weights = scores.softmax(-1);
                mixed = node.Causal ? CausalMask.Product(weights, v) : weights.matmul(v);
            }
        }
        return Output(mixed.transpose(1, 2).reshape(batch, time, node.Heads * node.ValueWidth));
    }

    /// <summary>Linear: S [batch, heads, value, key] (and its imaginary part with a decay phase); softmax: keys and values so far.</summary>
    public override Tensor[] InitialState(long batch)
    {
        var (dtype, device) = (query.dtype, query.device);
        Tensor Memory() => zeros(batch, node.Heads, node.ValueWidth, node.KeyWidth, dtype: dtype, device: device);
        if (!IsLinear)
            return [zeros(batch, node.Heads, 0, node.KeyWidth, dtype: dtype, device: device),
                    zeros(batch, node.Heads, 0, node.ValueWidth, dtype: dtype, device: device)];
        return node.DecayPhase is null ? [Memory()] : [Memory(), Memory()];
    }

    /// <summary>
    /// S_t = lambda_t S_{t-1} + v_t phi(k_t)^T, y_t = Re(S_t) phi(q_t); lambda_t = gamma, gamma e^(i theta) or
    /// sigmoid(w . x_t + b). Softmax: append k_t, v_t and attend over all steps so far.
    /// </summary>
    public override (Tensor Output, Tensor[] State) Step(IReadOnlyList<Tensor> inputs, Tensor[] state)
    {
        var x = inputs[0];
        long batch = x.shape[0];
        var (q, k, v) = (Heads(x, query, node.KeyWidth), Heads(x, key, node.KeyWidth), Heads(x, value, node.ValueWidth));
        if (IsLinear)
        {
            var outer = v.transpose(-2, -1).matmul(TensorValues.Apply(node.FeatureMap, k));
            // this runs once per step: its sums and factors use Scalars held to the end of the step, not the ones TorchSharp
            // would make for each operator and leave to their finalisers (see HeldScalars)
            var one = HeldScalars.One;
            Tensor[] memory;
            if (node.InputDependentDecay)
                memory = [(HeadDecayLogits(x).sigmoid().view(batch, node.Heads, 1, 1) * state[0]).add(outer, one)];
            else if (node.HeadDecays is not null)
                memory = [(HeadDecayValues(x).view(1, node.Heads, 1, 1) * state[0]).add(outer, one)];
            else if (node.DecayPhase is { } theta)
            {
                using Scalar re = node.Decay!.Value * Math.Cos(theta), im = node.Decay.Value * Math.Sin(theta);
                memory = [state[0].mul(re).sub(state[1].mul(im)).add(outer, one), state[0].mul(im).add(state[1].mul(re), one)];
            }
            else if (node.Decay is { } gamma)
            {
                using Scalar factor = gamma;
                memory = [state[0].mul(factor).add(outer, one)];
            }
            else memory = [state[0].add(outer, one)];
            var y = memory[0].matmul(TensorValues.Apply(node.FeatureMap, q).transpose(-2, -1)).squeeze(-1);
            return (Output(y.reshape(batch, 1, node.Heads * node.ValueWidth)), memory);
        }
        var keys = cat([state[0], k], 2);
        var values = cat([state[1], v], 2);
        var weights = q.matmul(keys.transpose(-2, -1)).Over(Math.Sqrt(node.KeyWidth)).softmax(-1);
        var mixed = weights.matmul(values).squeeze(2);
        return (Output(mixed.reshape(batch, 1, node.Heads * node.ValueWidth)), [keys, values]);
    }

    public override Node ReadBack(Node node) =>
        ((Attention)node) with
        {
            Weights = new AttentionWeights(TensorValues.ToValues(query), TensorValues.ToValues(key), TensorValues.ToValues(value),
                output is null ? null : TensorValues.ToValues(output),
                decayWeight is null ? null : TensorValues.ToValues(decayWeight),
                decayBias is null ? null : TensorValues.ToValues(decayBias)),
        };

    /// <summary>[batch, time, in] -> [batch, heads, time, width].</summary>
    private Tensor Heads(Tensor x, Tensor weight, int width) =>
        nn.functional.linear(x, weight).view(x.shape[0], x.shape[1], node.Heads, width).transpose(1, 2);

    private Tensor Output(Tensor y) => output is null ? y : nn.functional.linear(y, output);

    internal const int Chunk = GatedLinearAttentionChunks.Chunk;

    /// <summary>log lambda_t of every head and step, [batch, heads, time, 1]: log sigmoid(w_h . x_t + b_h), log gamma_h or
    /// log gamma; null without a decay.</summary>
    private Tensor? LogDecays(Tensor x)
    {
        long batch = x.shape[0], time = x.shape[1];
        if (node.InputDependentDecay) return nn.functional.logsigmoid(HeadDecayLogits(x)).transpose(1, 2).unsqueeze(-1);
        if (node.HeadDecays is not null) return HeadDecayValues(x).log().view(1, node.Heads, 1, 1).expand(batch, node.Heads, time, 1);
        if (node.Decay is not { } gamma) return null;
        using var logGamma = Math.Log(gamma).ToScalar();
        return full(new long[] { batch, node.Heads, time, 1 }, logGamma, dtype: x.dtype, device: x.device);
    }

    /// <summary>gamma_h of per-head decays, [heads], in x's dtype and on its device.</summary>
    internal Tensor HeadDecayValues(Tensor x) => TensorValues.ToTorch(node.HeadDecays!, x.dtype).to(x.device);

    /// <summary>D[h, t, s] = gamma_h^(t-s) for s &lt;= t, else 0: [heads, time, time].</summary>
    private Tensor HeadDecayMask(Tensor x)
    {
        var lag = Lags(x.shape[1], x.device);
        var logs = TensorValues.ToTorch(node.HeadDecays!, ScalarType.Float64).to(x.device).log().view(-1, 1, 1);
        return where(lag.ge(HeldScalars.Zero), (lag.clamp_min(HeldScalars.Zero) * logs).exp(), zeros_like(lag)).to_type(x.dtype);
    }

    /// <summary>t - s for every step t (rows) and s (columns), float64: [time, time].</summary>
    private static Tensor Lags(long time, Device device)
    {
        var steps = HeldArithmetic.Positions(0, time, device);
        return steps.unsqueeze(1) - steps.unsqueeze(0);
    }

    /// <summary>D[t, s] = gamma^(t-s) cos(theta (t-s)) for s &lt;= t, else 0 (gamma = 1, theta = 0 when absent).</summary>
    private Tensor DecayMask(long time, ScalarType dtype, Device device)
    {
        var lag = Lags(time, device);
        var past = lag.clamp_min(HeldScalars.Zero);
        var weight = past.Times(Math.Log(node.Decay ?? 1.0)).exp();
        if (node.DecayPhase is { } theta) weight = weight * past.Times(theta).cos();
        return where(lag.ge(HeldScalars.Zero), weight, zeros_like(lag)).to_type(dtype);
    }

    /// <summary>
    /// D[b, h, t, s] = prod_{r=s+1..t} sigmoid(w_h . x_r + b_h) = exp(L_t - L_s), L the running sum of
    /// log-sigmoids, for s &lt;= t, else 0: [batch, heads, time, time].
    /// </summary>
    private Tensor GatedDecayMask(Tensor x)
    {
        var time = x.shape[1];
        var cumulative = nn.functional.logsigmoid(HeadDecayLogits(x)).cumsum(1).transpose(1, 2).unsqueeze(-1);
        var lag = cumulative - cumulative.transpose(-2, -1);
        var causal = ones(time, time, dtype: ScalarType.Bool, device: x.device).tril();
        return where(causal, lag.clamp_max(HeldScalars.Zero).exp(), zeros_like(lag));
    }

    /// <summary>
    /// The masked forms hold [batch, heads, time, time] scores (and a [time, time] decay mask): refused with the size and the
    /// fix before libtorch is asked for more memory than the machine has.
    /// </summary>
    private void GuardScores(long batch, long time, ScalarType dtype) =>
        AllocationGuard.CheckAllocation(batch * node.Heads * time * time, dtype, node.Name,
            $"attention scores [{batch}, {node.Heads}, {time}, {time}] ({(execution == ExecutionMode.TorchOps ? "ExecutionMode.TorchOps" : "the masked form")})",
            hint: execution == ExecutionMode.TorchOps || IsLinear
                ? "use ExecutionMode.Auto on the CPU (tiled softmax, chunked or recurrent linear attention run in O(T) memory), or shorter sequences"
                : "run shorter sequences or a smaller batch at a time");

    /// <summary>w_h . x_t + b_h: [batch, time, heads].</summary>
    internal Tensor HeadDecayLogits(Tensor x) => nn.functional.linear(x, decayWeight!, decayBias!);
}

internal sealed class AttentionExecution : NodeExecution<Attention>
{
    protected override NodeModule Module(Attention node, ScalarType dtype, ExecutionMode execution) => new AttentionModule(node, dtype, execution);

    protected override Stepper<T> Stepper<T>(Attention node, Stepper<T>[] sources, int batch, int capacity) =>
        node.Kernel == AttentionKernel.Linear
            ? new LinearAttentionStepper<T>(node, sources[0], batch)
            : new SoftmaxAttentionStepper<T>(node, sources[0], batch, capacity);
}
