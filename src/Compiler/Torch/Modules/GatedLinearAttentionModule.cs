using System.Numerics;
using Duality.Ir;
using Duality.Kernels;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// Gated linear attention over its branches (see <see cref="GatedLinearAttention"/>): the masked form (one chunk of the
/// whole sequence) in TorchOps; on the CPU the recurrent form as one fused loop, with gradients as one autograd operation
/// whose reverse pass runs back through the same recurrence (<see cref="GatedLinearAttentionFunction"/>); exact chunks on
/// other devices and dtypes; and one step on the state S [batch, heads, key, value]. A
/// normalised attention runs on values with a column of ones appended, whose output is n_t . q_t.
/// </summary>
internal sealed class GatedLinearAttentionModule(GatedLinearAttention node, ScalarType dtype, ExecutionMode execution) : NodeModule(node.Name)
{
    public override bool IsStateful => true;

    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        if (RunsRecurrent(inputs[0])) return Recurrent(inputs);
        var (batch, time) = (inputs[0].shape[0], inputs[0].shape[1]);
        long chunk = execution == ExecutionMode.TorchOps ? time : GatedLinearAttentionChunks.Chunk;
        // the masked form holds [batch, heads, time, time] scores; decays per key channel that cannot be factored over the
        // whole sequence fall back to chunks of 16 steps, never to [time, time, key] weights
        if (execution == ExecutionMode.TorchOps)
            AllocationGuard.CheckAllocation(batch * node.Heads * time * time, inputs[0].dtype, node.Name,
                $"masked attention scores [{batch}, {node.Heads}, {time}, {time}] (ExecutionMode.TorchOps)",
                hint: "use ExecutionMode.Auto (exact chunks, O(T) memory), or shorter sequences");
        return Run(inputs, null, chunk).Output;
    }

    /// <summary>The node's sizes as the autograd operation takes them.</summary>
    private GatedLinearAttentionFunction.Form Form => new(node.Heads, node.KeyWidth, node.ValueWidth, node.Normalised);

    /// <summary>Whether a forward pass runs the fused recurrent loop: on the CPU, in float32 or float64.</summary>
    internal bool RunsRecurrent(Tensor x) =>
        execution != ExecutionMode.TorchOps && x.device.type == DeviceType.CPU && x.dtype is ScalarType.Float32 or ScalarType.Float64;

    /// <summary>
    /// The recurrent form as one fused loop (<see cref="GatedLinearAttentionLoop"/>), O(T key value) per head; when a
    /// gradient is recorded, as one autograd operation with the loop's reverse pass.
    /// </summary>
    private Tensor Recurrent(IReadOnlyList<Tensor> inputs)
    {
        if (GradientGate.Records([.. inputs]))
            return GatedLinearAttentionFunction.Run(inputs[0], inputs[1], inputs[2], LogDecays(inputs),
                node.LogInputGate is null ? null : inputs[node.LogInputGateIndex], Form);
        return RunLoop(LoopOperand.Packed(inputs[0], node.Heads, node.KeyWidth), LoopOperand.Packed(inputs[1], node.Heads, node.KeyWidth),
            LoopOperand.Packed(inputs[2], node.Heads, node.ValueWidth), inputs);
    }

    /// <summary>
    /// The recurrent form on q, k and v read from <paramref name="sources"/> as <paramref name="reading"/> says (one autograd
    /// operation when a gradient is recorded, the loop alone otherwise); the decay and gate from <paramref name="inputs"/>,
    /// as <see cref="RunLoop"/> reads them; with <paramref name="skip"/> D, the output y + D * v.
    /// </summary>
    internal Tensor RunShared(IReadOnlyList<Tensor> sources, GatedLinearAttentionFunction.Reading reading, IReadOnlyList<Tensor> inputs,
        Tensor? skip = null)
    {
        var gate = node.LogInputGate is null ? null : inputs[node.LogInputGateIndex];
        var decay = node.LogDecay is null ? null : inputs[node.LogDecayIndex];
        if (GradientGate.Records([.. sources, gate, decay, skip]))
            return GatedLinearAttentionFunction.RunShared(sources, reading, LogDecays(inputs), gate, Form, skip);
        var (q, k, v) = reading.Operands(sources);
        var y = RunLoop(q, k, v, inputs);
        if (skip is not null) GatedLinearAttentionFunction.Skip(y, v, skip.contiguous(), y, Form);
        return y;
    }

    /// <summary>
    /// The fused loop without gradients on q, k and v read where they lie; the decay and gate from <paramref name="inputs"/>,
    /// the node's inputs in its order, whose first gives batch, time, dtype and device (q, k and v are read from the operands).
    /// </summary>
    internal Tensor RunLoop(LoopOperand q, LoopOperand k, LoopOperand v, IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        long batch = x.shape[0], time = x.shape[1];
        var logDecay = LogDecays(inputs);
        var gate = node.LogInputGate is null ? null : inputs[node.LogInputGateIndex].contiguous();
        // without an input gate the loop reads the factors e^l, with one the log-decays (it forms e^(l + m_{t-1} - m_t))
        var decay = logDecay is null ? null : (gate is null ? logDecay.exp() : logDecay).contiguous();
        var y = empty(batch, time, node.Heads * node.ValueWidth, dtype: x.dtype, device: x.device);
        var shape = new GatedLinearAttentionLoop.Shape((int)batch, (int)time, node.Heads, node.KeyWidth, node.ValueWidth,
            decay is null ? 0 : (int)decay.shape[3]);
        var layout = new GatedLinearAttentionLoop.Layout(q.Rows, k.Rows, v.Rows);
        using var alive = RawStorage.KeepAlive(q.Anchor, k.Anchor, v.Anchor, decay, gate, y);
        unsafe
        {
            if (x.dtype == ScalarType.Float32)
                GatedLinearAttentionLoop.Run(q.Pointer<float>(), k.Pointer<float>(), v.Pointer<float>(), RawStorage.PointerOrNull<float>(decay),
                    RawStorage.PointerOrNull<float>(gate), node.Normalised, RawStorage.Pointer<float>(y), shape, layout: layout);
            else
                GatedLinearAttentionLoop.Run(q.Pointer<double>(), k.Pointer<double>(), v.Pointer<double>(), RawStorage.PointerOrNull<double>(decay),
                    RawStorage.PointerOrNull<double>(gate), node.Normalised, RawStorage.Pointer<double>(y), shape, layout: layout);
        }
        return y;
    }

    /// <summary>
    /// The log-decay of each step and head, log gamma_h added: [batch, time, heads, 1 or key], or null without a decay.
    /// </summary>
    private Tensor? LogDecays(IReadOnlyList<Tensor> inputs)
    {
        long batch = inputs[0].shape[0], time = inputs[0].shape[1];
        var logDecay = node.LogDecay is { } ? inputs[node.LogDecayIndex] : null;
        var perStep = logDecay?.reshape(batch, time, node.Heads, logDecay.shape[2] / node.Heads);
        if (node.HeadDecays is not { } gammas) return perStep;
        var logGamma = TensorValues.ToTorch(gammas, inputs[0].dtype).to(inputs[0].device).log().view(1, 1, node.Heads, 1);
        return perStep is null ? logGamma.expand(batch, time, node.Heads, 1) : perStep.Plus(logGamma);
    }

    /// <summary>
    /// S e^(-M), with the normaliser's column when normalised: [batch, heads, key, value (+1)], and the stabiliser's M
    /// [batch, heads] (-inf before the first step with an input gate, 0 without).
    /// </summary>
    public override Tensor[] InitialState(long batch) =>
        [zeros(batch, node.Heads, node.KeyWidth, node.ValueWidth + (node.Normalised ? 1 : 0), dtype: dtype),
         full(new long[] { batch, node.Heads }, HeldScalars.Of(node.LogInputGate is null ? 0.0 : double.NegativeInfinity), dtype: dtype)];

    public override (Tensor Output, Tensor[] State) Step(IReadOnlyList<Tensor> inputs, Tensor[] state)
    {
        var x = inputs[0];
        return Run(inputs, (state[0].to(x.dtype, x.device), state[1].to(x.dtype, x.device)), 1);
    }

    private (Tensor Output, Tensor[] State) Run(IReadOnlyList<Tensor> inputs, (Tensor, Tensor)? state, long chunk)
    {
        var x = inputs[0];
        long batch = x.shape[0], time = x.shape[1];
        Tensor Heads(Tensor t) => t.view(batch, time, node.Heads, t.shape[2] / node.Heads).transpose(1, 2);
        var (q, k, v) = (Heads(inputs[0]), Heads(inputs[1]), Heads(inputs[2]));
        if (node.Normalised) v = cat([v, ones(batch, node.Heads, time, 1, dtype: v.dtype, device: v.device)], -1);
        var decay = LogDecays(inputs)?.transpose(1, 2);
        var gate = node.LogInputGate is null ? null : inputs[node.LogInputGateIndex].transpose(1, 2);
        var result = GatedLinearAttentionChunks.Run(q, k, v, decay, gate, state, chunk);
        // rows come scaled by e^(-m_t): o / max(|n . q|, 1) = (o e^-m) / max(|n . q| e^-m, e^-m)
        var mixed = result.Output;
        if (node.Normalised)
        {
            var normaliser = mixed.narrow(-1, node.ValueWidth, 1).abs();
            mixed = mixed.narrow(-1, 0, node.ValueWidth)
                    / (result.Shift is { } shift ? maximum(normaliser, shift.neg().exp()) : normaliser.clamp_min(HeldScalars.One));
        }
        else if (result.Shift is { } shift) mixed = mixed * shift.exp();
        return (mixed.transpose(1, 2).reshape(batch, time, node.Heads * node.ValueWidth), [result.Memory, result.MemoryShift]);
    }
}

/// <summary>
/// Gated linear attention one token at a time: per head, S = diag(lambda) S + e^g k v^T (lambda = gamma_h e^l),
/// o = S^T q, divided by max(|n . q|, 1) when normalised (n kept as S's last column). With an input gate S is kept as
/// S e^(-M), M = max(lambda_max + M, g) per head (xLSTM's stabiliser), so no exponential overflows.
/// </summary>
internal sealed class GatedLinearAttentionStepper<T> : Stepper<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly GatedLinearAttention node;
    private readonly Stepper<T> query, key, value;
    private readonly Stepper<T>? decay, gate;
    private readonly T[] logGammas, memory, lambdas, shifts;
    private readonly int columns;

    public GatedLinearAttentionStepper(GatedLinearAttention node, Stepper<T>[] sources, int batch) : base(batch, node.Heads * node.ValueWidth)
    {
        this.node = node;
        (query, key, value) = (sources[0], sources[1], sources[2]);
        decay = node.LogDecay is null ? null : sources[node.LogDecayIndex];
        gate = node.LogInputGate is null ? null : sources[node.LogInputGateIndex];
        logGammas = Enumerable.Range(0, node.Heads).Select(h => T.CreateChecked(node.HeadDecays is { } g ? Math.Log(g[h]) : 0)).ToArray();
        columns = node.ValueWidth + (node.Normalised ? 1 : 0);
        memory = new T[batch * node.Heads * node.KeyWidth * columns];
        lambdas = new T[node.KeyWidth];
        shifts = new T[batch * node.Heads];
        Reset();
    }

    public override void Reset()
    {
        Array.Clear(memory);
        Array.Fill(shifts, gate is null ? T.Zero : T.NegativeInfinity);
    }

    public override void Step()
    {
        int dk = node.KeyWidth, dv = node.ValueWidth;
        var perChannel = decay is not null && decay.Width != node.Heads;
        for (int b = 0; b < Batch; b++)
        {
            ReadOnlySpan<T> q = query.Row(b), k = key.Row(b), v = value.Row(b);
            var y = Row(b);
            for (int h = 0; h < node.Heads; h++)
            {
                for (int j = 0; j < dk; j++)
                    lambdas[j] = logGammas[h] + (decay is null ? T.Zero : decay.Row(b)[perChannel ? h * dk + j : h]);
                // S e^-M: lambda e^(M - M') carries it, e^(g - M') writes, M' = max(largest + M, g), as the fused loop forms
                // them (each exponent at most 0 as computed, whatever the rounding of a large M)
                ref var shift = ref shifts[b * node.Heads + h];
                var entry = T.One;
                if (gate is null)
                    for (int j = 0; j < dk; j++) lambdas[j] = T.Exp(lambdas[j]);
                else
                    unsafe
                    {
                        var g = gate.Row(b)[h];
                        fixed (T* l = lambdas) entry = GatedLinearAttentionLoop.Factors(l, &g, dk, dk, ref shift, l);
                    }
                var state = memory.AsSpan((b * node.Heads + h) * dk * columns, dk * columns);
                var output = y.Slice(h * dv, dv);
                output.Clear();
                // the earlier steps' part read before the write, the step's own part as one dot (e k) . q shared by the output
                // and the normaliser, as the fused loop reads them (their quotient keeps v when the step dominates)
                T normaliser = T.Zero, own = T.Zero;
                for (int j = 0; j < dk; j++) own += entry * k[h * dk + j] * q[h * dk + j];
                for (int j = 0; j < dk; j++)
                {
                    var row = state.Slice(j * columns, columns);
                    var (written, qj) = (entry * k[h * dk + j], q[h * dk + j]);
                    for (int c = 0; c < dv; c++)
                    {
                        var carried = lambdas[j] * row[c];
                        output[c] += qj * carried;
                        row[c] = carried + written * v[h * dv + c];
                    }
                    if (node.Normalised)
                    {
                        var carried = lambdas[j] * row[dv];
                        normaliser += qj * carried;
                        row[dv] = carried + written;
                    }
                }
                for (int c = 0; c < dv; c++) output[c] += own * v[h * dv + c];
                normaliser += own;
                if (node.Normalised)
                {
                    var divisor = T.Max(T.Abs(normaliser), T.Exp(-shift));
                    for (int c = 0; c < dv; c++) output[c] /= divisor;
                }
                else if (gate is not null)
                {
                    var scale = T.Exp(shift);
                    for (int c = 0; c < dv; c++) output[c] *= scale;
                }
            }
        }
    }
}

internal sealed class GatedLinearAttentionExecution : NodeExecution<GatedLinearAttention>
{
    protected override NodeModule Module(GatedLinearAttention node, ScalarType dtype, ExecutionMode execution) =>
        new GatedLinearAttentionModule(node, dtype, execution);

    protected override Stepper<T> Stepper<T>(GatedLinearAttention node, Stepper<T>[] sources, int batch, int capacity) =>
        new GatedLinearAttentionStepper<T>(node, sources, batch);
}
