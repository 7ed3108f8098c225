using Duality.Execution;
using Duality.Ir;
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

    public override bool IsStateful => true;

    /// <summary>Whether a forward pass runs the fused recurrent loop: linear and causal, on the CPU, without gradients.</summary>
    private bool RunsRecurrent(Tensor x) =>
        IsLinear && node.Causal && execution != ExecutionMode.TorchOps && x.device.type == DeviceType.CPU && !is_grad_enabled();

    /// <summary>The fused loop writing its projections, heads and output into kept buffers.</summary>
    public override Tensor Forward(IReadOnlyList<Tensor> inputs, KeptBuffers kept) =>
        RunsRecurrent(inputs[0]) ? Recurrent(inputs[0], kept).alias() : Forward(inputs);

    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        long batch = x.shape[0], time = x.shape[1];
        if (RunsRecurrent(x)) return Recurrent(x, null);
        var (q, k, v) = (Heads(x, query, node.KeyWidth), Heads(x, key, node.KeyWidth), Heads(x, value, node.ValueWidth));
        Tensor mixed;
        if (IsLinear && node.Causal && node.DecayPhase is null && execution != ExecutionMode.TorchOps && time > Chunk)
            mixed = Chunked(TensorValues.Apply(node.FeatureMap, q), TensorValues.Apply(node.FeatureMap, k), v,
                node.InputDependentDecay ? nn.functional.logsigmoid(HeadDecayLogits(x)).transpose(1, 2) : null);
        else if (IsLinear)
        {
            var scores = TensorValues.Apply(node.FeatureMap, q).matmul(TensorValues.Apply(node.FeatureMap, k).transpose(-2, -1));
            if (node.InputDependentDecay) scores = scores * GatedDecayMask(x);
            else if (node.Causal) scores = scores * DecayMask(time, x.dtype, x.device);
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
            Tensor[] memory;
            if (node.InputDependentDecay)
                memory = [HeadDecayLogits(x).sigmoid().view(batch, node.Heads, 1, 1) * state[0] + outer];
            else if (node.DecayPhase is { } theta)
            {
                var (re, im) = (node.Decay!.Value * Math.Cos(theta), node.Decay.Value * Math.Sin(theta));
                memory = [state[0] * re - state[1] * im + outer, state[0] * im + state[1] * re];
            }
            else memory = [node.Decay is { } gamma ? state[0] * gamma + outer : state[0] + outer];
            var y = memory[0].matmul(TensorValues.Apply(node.FeatureMap, q).transpose(-2, -1)).squeeze(-1);
            return (Output(y.reshape(batch, 1, node.Heads * node.ValueWidth)), memory);
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
            Weights = new AttentionWeights(TensorValues.ToValues(query), TensorValues.ToValues(key), TensorValues.ToValues(value),
                output is null ? null : TensorValues.ToValues(output),
                decayWeight is null ? null : TensorValues.ToValues(decayWeight),
                decayBias is null ? null : TensorValues.ToValues(decayBias)),
        };

    /// <summary>[batch, time, in] -> [batch, heads, time, width].</summary>
    private Tensor Heads(Tensor x, Tensor weight, int width) =>
        nn.functional.linear(x, weight).view(x.shape[0], x.shape[1], node.Heads, width).transpose(1, 2);

    private Tensor Output(Tensor y) => output is null ? y : nn.functional.linear(y, output);

    internal const int Chunk = 64;

    /// <summary>
    /// Without gradients, on the CPU: the recurrent form as one fused loop (<see cref="Kernels.LinearAttentionLoop"/>),
    /// O(T key value) per head with the state in cache, then the output projection. Projections, heads and output
    /// come from recycled memory when large, or from <paramref name="kept"/> buffers (the output only when it dies
    /// within the pass).
    /// </summary>
    internal Tensor Recurrent(Tensor x, KeptBuffers? kept)
    {
        var keepOutput = kept?.ResultDies == true;
        Func<long[], ScalarType, Tensor> Slot(int slot, bool keep = true) => KeptBuffers.Allocator(kept, slot, x.device, keep);
        Tensor Project(Tensor weight, int slot) => ProjectionModule.Product(x, weight, null, Slot(slot));
        var q = TensorValues.Apply(node.FeatureMap, Project(query, 0)).contiguous();
        var k = TensorValues.Apply(node.FeatureMap, Project(key, 1)).contiguous();
        var v = Project(value, 2);
        var decay = node.InputDependentDecay ? HeadDecayLogits(x).sigmoid().contiguous() : null;
        var y = Slot(3, output is not null || keepOutput)([x.shape[0], x.shape[1], node.Heads * node.ValueWidth], x.dtype);
        var shape = new Kernels.LinearAttentionLoop.Shape((int)x.shape[0], (int)x.shape[1], node.Heads, node.KeyWidth, node.ValueWidth);
        using var alive = Kernels.RawStorage.KeepAlive(q, k, v, decay, y);
        unsafe
        {
            var gamma = node.Decay ?? 1.0;
            var (re, im) = node.DecayPhase is { } theta ? (gamma * Math.Cos(theta), gamma * Math.Sin(theta)) : (gamma, 0.0);
            if (x.dtype == ScalarType.Float32)
                Kernels.LinearAttentionLoop.Run(Pointer<float>(q), Pointer<float>(k), Pointer<float>(v), Kernels.RawStorage.PointerOrNull<float>(decay),
                    (float)gamma, node.DecayPhase is null ? null : new((float)re, (float)im), Pointer<float>(y), shape);
            else
                Kernels.LinearAttentionLoop.Run(Pointer<double>(q), Pointer<double>(k), Pointer<double>(v), Kernels.RawStorage.PointerOrNull<double>(decay),
                    gamma, node.DecayPhase is null ? null : new(re, im), Pointer<double>(y), shape);
        }
        return output is null ? y : ProjectionModule.Product(y, output, null, Slot(4, keepOutput));
    }

    private static unsafe T* Pointer<T>(Tensor t) where T : unmanaged => Kernels.RawStorage.Pointer<T>(t);

    /// <summary>
    /// Causal linear attention in chunks of C steps: exact, O(T C) instead of O(T^2). With l_t the log
    /// decay of step t (ln gamma, log sigmoid(w . x_t + b), or 0) and L_i its running sum within a chunk:
    ///   y_i = sum_{j &lt;= i in chunk} e^(L_i - L_j) (q_i . k_j) v_j  +  e^(L_i) q_i S_(c-1)
    ///   S_c = e^(L_(C-1)) S_(c-1) + sum_j e^(L_(C-1) - L_j) k_j v_j^T
    /// q, k: [batch, heads, time, key]; v: [batch, heads, time, value]; logDecay: [batch, heads, time] or null.
    /// </summary>
    private Tensor Chunked(Tensor q, Tensor k, Tensor v, Tensor? logDecay)
    {
        long batch = q.shape[0], heads = q.shape[1], time = q.shape[2], chunks = (time + Chunk - 1) / Chunk, padding = chunks * Chunk - time;
        Tensor Blocks(Tensor t) =>
            (padding > 0 ? nn.functional.pad(t, [0, 0, 0, padding]) : t).view(batch, heads, chunks, Chunk, t.shape[3]);
        var (qb, kb, vb) = (Blocks(q), Blocks(k), Blocks(v));
        Tensor cumulative;
        if (logDecay is not null)
            cumulative = (padding > 0 ? nn.functional.pad(logDecay, [0, padding]) : logDecay).view(batch, heads, chunks, Chunk).cumsum(-1);
        else
            cumulative = arange(1, Chunk + 1, dtype: q.dtype, device: q.device) * Math.Log(node.Decay ?? 1.0);
        var lag = cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2);
        var causal = ones(Chunk, Chunk, dtype: ScalarType.Bool, device: q.device).tril();
        var within = where(causal, lag.clamp_max(0).exp(), zeros_like(lag));
        var local = (qb.matmul(kb.transpose(-2, -1)) * within).matmul(vb);
        var last = cumulative.narrow(-1, Chunk - 1, 1);
        var toEnd = (last - cumulative).exp().unsqueeze(-1);
        var contributions = (kb * toEnd).transpose(-2, -1).matmul(vb);
        var carry = last.squeeze(-1).exp();
        var fromStart = cumulative.exp().unsqueeze(-1);
        var state = zeros(batch, heads, node.KeyWidth, node.ValueWidth, dtype: q.dtype, device: q.device);
        var carried = new Tensor[chunks];
        for (long c = 0; c < chunks; c++)
        {
            var decayIn = logDecay is null ? fromStart : fromStart.select(2, c);
            var totals = logDecay is null ? carry : carry.select(2, c).view(batch, heads, 1, 1);
            carried[c] = (qb.select(2, c) * decayIn).matmul(state);
            state = state * totals + contributions.select(2, c);
        }
        var mixed = local + stack(carried, 2);
        return mixed.view(batch, heads, chunks * Chunk, node.ValueWidth).narrow(2, 0, time);
    }

    /// <summary>D[t, s] = gamma^(t-s) cos(theta (t-s)) for s &lt;= t, else 0 (gamma = 1, theta = 0 when absent).</summary>
    private Tensor DecayMask(long time, ScalarType dtype, Device device)
    {
        var steps = arange(time, dtype: ScalarType.Float64, device: device);
        var lag = steps.unsqueeze(1) - steps.unsqueeze(0);
        var past = lag.clamp_min(0);
        var weight = (past * Math.Log(node.Decay ?? 1.0)).exp();
        if (node.DecayPhase is { } theta) weight = weight * (past * theta).cos();
        return where(lag >= 0, weight, zeros_like(lag)).to_type(dtype);
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
        return where(causal, lag.clamp_max(0).exp(), zeros_like(lag));
    }

    /// <summary>w_h . x_t + b_h: [batch, time, heads].</summary>
    private Tensor HeadDecayLogits(Tensor x) => nn.functional.linear(x, decayWeight!, decayBias!);
}

internal sealed class AttentionExecution : NodeExecution<Attention>
{
    protected override NodeModule Module(Attention node, ScalarType dtype, ExecutionMode execution) => new AttentionModule(node, dtype, execution);

    protected override Stepper<T> Stepper<T>(Attention node, Stepper<T>[] sources, int batch, int capacity) =>
        node.Kernel == AttentionKernel.Linear
            ? new LinearAttentionStepper<T>(node, sources[0], batch)
            : new SoftmaxAttentionStepper<T>(node, sources[0], batch, capacity);
}
