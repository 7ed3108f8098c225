using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>
/// Gated linear attention in exact chunks of C steps, differentiable (TorchSharp operations), O(T C) memory; also the
/// chunked form of <see cref="Ir.Attention"/>'s causal linear kernel (one log-decay per head, no gate). With
/// l_t the log-decay of step t (per head: m = 1, or per key channel: m = key), g_t the log input gate, L_t the running
/// sum of l from the chunk's first step and D[t, s] = sum_{r = s+1..t} l_r (as a sum of its own terms where L_t - L_s
/// would cancel: strong decays, long chunks):
///   y_i = sum_{j &lt;= i in chunk} (sum_c q_i[c] k_j[c] e^(g_j + D[i, j][c])) v_j  +  (q_i * e^(L_i)) S_(c-1)
///   S_c = e^(L_(C-1)) * S_(c-1) + sum_j (k_j * e^(g_j + D[C-1, j])) v_j^T
/// Decays per key channel are factored through e^(L_i) and e^(g_j - L_j) when <see cref="Factorable"/> proves that
/// exact on the data, and weighed channel by channel otherwise. The chunk is the whole sequence for the masked form
/// and 1 for one step.
/// </summary>
internal static class GatedLinearAttentionChunks
{
    /// <summary>
    /// Steps per chunk: 64 (scores [C, C] from one product); 16 for decays per key channel too strong to factor within 64
    /// steps (weights [C, C, key]).
    /// </summary>
    public const int Chunk = 64, ChannelChunk = 16;

    /// <summary>
    /// Whether e^(g_s + D[t, s] - m_t) = e^(L_t - m_t) e^(g_s - L_s) to rounding: every running sum L and every exponent
    /// of the queries and keys lies within +-bound, bound half the logarithm of the dtype's largest value (44 in float32,
    /// 354 in float64; -inf, a padded step's gate, gives an exact 0). The products of such factors neither overflow nor
    /// underflow, and the differences lose at most the rounding of numbers below 2 bound. Checked on the data.
    /// </summary>
    private static bool Factorable(Tensor running, Tensor queryExponents, Tensor keyExponents, ScalarType dtype)
    {
        var bound = dtype == ScalarType.Float64 ? 354.0 : dtype == ScalarType.Float32 ? 44.0 : 5.0;
        bool Within(Tensor x) => x.isneginf().logical_or(x.abs().IsAtMost(bound)).all().item<bool>();
        return Within(running) && Within(queryExponents) && Within(keyExponents);
    }

    /// <summary>
    /// D[t, s] = sum_{r = s+1..t} l_r for s &lt;= t (0 on the diagonal), -inf for s &gt; t: l [..., C, m] and its running
    /// sums L give [..., C (t), C (s), m]. The difference L_t - L_s loses the rounding of L, not of D: it is taken when every
    /// |L| is at most <see cref="Chunk"/> (what a chunk of unit decays reaches, so no more than the running sums' own
    /// rounding), or for float32 and narrower in float64 when C max |L| &lt;= 2^26 (the float64 sums then err by less than
    /// 2^-27, below float32's rounding); otherwise each entry is a running sum of its own terms.
    /// </summary>
    internal static Tensor Lags(Tensor l, Tensor running, Tensor future)
    {
        // finite sums only: an infinite log-decay takes the running sums of its own terms, where it stays -inf
        static bool Within(Tensor x, double bound) => x.abs().IsAtMost(bound).all().item<bool>();
        long c = l.shape[^2];
        static Tensor Differences(Tensor sums) => sums.unsqueeze(-2) - sums.unsqueeze(-3);
        Tensor lags;
        if (Within(running, Chunk)) lags = Differences(running);
        else if (l.dtype != ScalarType.Float64 && l.to(ScalarType.Float64).cumsum(-2) is var wide && Within(wide, Math.ScaleB(1, 26) / c))
            lags = Differences(wide).to(l.dtype);
        else
        {
            var later = ones(c, c, dtype: ScalarType.Bool, device: l.device).tril(-1).unsqueeze(-1);
            lags = l.unsqueeze(-2).expand([.. l.shape[..^2], c, c, l.shape[^1]]).masked_fill(later.logical_not(), HeldScalars.Zero).cumsum(-3);
        }
        return lags.masked_fill(future.unsqueeze(-1), HeldScalars.NegativeInfinity);
    }

    /// <summary>x with every entry above 0 taken as 0, its gradient passed through: an exponent at most 0 in exact
    /// arithmetic whose rounding must not make e^x exceed 1.</summary>
    private static Tensor AtMostZero(Tensor x) => x - x.detach().clamp_min(HeldScalars.Zero);

    /// <summary>
    /// q, k: [batch, heads, time, key]; v: [batch, heads, time, value]; logDecay: [batch, heads, time, 1 or key] or null;
    /// logGate: [batch, heads, time] or null; state: S e^(-M) [batch, heads, key, value] and its shift M [batch, heads]
    /// before the first step, or null for zeros (and M = -inf with a gate, 0 without).
    /// With an input gate every row t is computed scaled by e^(-m_t), m_t = max(lambda_t + m_{t-1}, g_t) (xLSTM's
    /// stabiliser, lambda_t the largest log-decay among the key channels): every exponent formed is then at most 0,
    /// whatever the gates' scale, and the caller divides the shift out (<see cref="Result.Shift"/>). Any m gives the same
    /// function; this one keeps the exponentials finite. Without a gate m = 0.
    /// </summary>
    public static Result Run(Tensor q, Tensor k, Tensor v, Tensor? logDecay, Tensor? logGate, (Tensor Memory, Tensor Shift)? state, long chunk)
    {
        long batch = q.shape[0], heads = q.shape[1], time = q.shape[2], key = q.shape[3], value = v.shape[3];
        var memory = state?.Memory ?? zeros(batch, heads, key, value, dtype: q.dtype, device: q.device);
        var stateShift = state?.Shift ?? full(batch, heads, HeldScalars.Of(logGate is null ? 0.0 : double.NegativeInfinity), dtype: q.dtype, device: q.device);
        if (time == 0) return new(zeros(batch, heads, 0, value, dtype: q.dtype, device: q.device), null, memory, stateShift);
        chunk = Math.Max(1, Math.Min(chunk, time));
        long chunks = (time + chunk - 1) / chunk, padding = chunks * chunk - time;
        // padded steps carry zero keys, queries, values and log-decays (and a gate of e^-inf = 0): they change neither
        // outputs nor the state
        // contiguous per head, so the products below (and their gradients) run on their operands without copying them
        Tensor Blocks(Tensor t, double fill = 0) =>
            (padding > 0 ? nn.functional.pad(t, [0, 0, 0, padding], value: fill) : t.contiguous()).view(batch, heads, chunks, chunk, t.shape[3]);
        var (qb, kb, vb) = (Blocks(q), Blocks(k), Blocks(v));
        var decays = Blocks(logDecay ?? zeros(batch, heads, time, 1, dtype: q.dtype, device: q.device));
        var cumulative = decays.cumsum(3);
        var last = cumulative.narrow(3, chunk - 1, 1);
        var gate = logGate is null ? null : Blocks(logGate.unsqueeze(-1), double.NegativeInfinity);
        var future = CausalMask.Future(chunk, q.device);
        var perHead = decays.shape[4] == 1;
        // D[t, s] per head ([.., C, C]), or per key channel ([.., C, C, key]) when the channels cannot be factored
        var lags = perHead ? Lags(decays, cumulative, future).squeeze(-1) : null;
        // g_s + D[t, s] per head: the exponents before the shift, whose row maxima the shift takes
        var weighted = gate is null || lags is null ? null
            : lags.Plus(gate.squeeze(-1).unsqueeze(-2)).masked_fill(future, HeldScalars.NegativeInfinity);
        var (shift, starts, ends) = gate is null ? (null, null, null) : Shifts(decays, weighted, gate, stateShift, future);
        // the exponents' shifts, with m = -inf (nothing written yet, all candidates -inf) taken as 0 so that they stay -inf
        var (rowShift, startShift) = shift is null ? (null, null) : (Finite(shift), Finite(starts!));
        var endShift = rowShift?.narrow(3, chunk - 1, 1);
        Tensor scores;
        if (perHead)
        {
            // at most 0 as computed: m_t is the largest of the same g_s + D[t, s] (masked before e^x, so a non-finite gate at
            // a later step reaches neither the value nor the gradient)
            var exponents = weighted is null ? lags! : weighted - rowShift!;
            scores = (qb.matmul(kb.transpose(-2, -1)) * exponents.exp()).masked_fill(future, HeldScalars.Zero);
        }
        else
        {
            // e^(g_s + D[t, s] - m_t) = e^(L_t - m_t) e^(g_s - L_s): one product when each factor lies within e^(+-bound)
            var queryExponents = shift is null ? cumulative : cumulative - rowShift!;
            var keyExponents = gate is null ? -cumulative : gate - cumulative;
            if (Factorable(cumulative, queryExponents, keyExponents, q.dtype))
                scores = (qb * queryExponents.exp()).matmul((kb * keyExponents.exp()).transpose(-2, -1)).masked_fill(future, HeldScalars.Zero);
            else if (chunk > ChannelChunk)
                return Run(q, k, v, logDecay, logGate, state, ChannelChunk);
            else
            {
                lags = Lags(decays, cumulative, future);
                var exponents = gate is null ? lags
                    : AtMostZero(lags.Plus(gate.unsqueeze(-3)) - rowShift!.unsqueeze(-1)).masked_fill(future.unsqueeze(-1), HeldScalars.NegativeInfinity);
                scores = (qb.unsqueeze(-2) * kb.unsqueeze(-3) * exponents.exp()).sum(-1).masked_fill(future, HeldScalars.Zero);
            }
        }
        var local = CausalMask.Product(scores, vb);
        // D[C-1, s]: the last row of the lags, or L_(C-1) - L_s where the channels were factored (all within +-bound)
        var toEnd = lags is null ? last - cumulative
            : perHead ? lags.narrow(3, chunk - 1, 1).transpose(-2, -1) : lags.narrow(3, chunk - 1, 1).squeeze(3);
        if (gate is not null) toEnd = AtMostZero(toEnd.Plus(gate) - endShift!);
        var contributions = (kb * toEnd.exp()).transpose(-2, -1).matmul(vb);
        var carry = (gate is null ? last : AtMostZero(last.Plus(startShift!) - endShift!)).exp().transpose(-2, -1);
        var fromStart = (gate is null ? cumulative : AtMostZero(cumulative.Plus(startShift!) - rowShift!)).exp();
        // the state entering each chunk, then what every chunk reads from its state in one product
        var entering = new Tensor[chunks];
        for (long c = 0; c < chunks; c++)
        {
            entering[c] = memory;
            memory = (memory * carry.select(2, c)).Plus(contributions.select(2, c));
        }
        var mixed = local.Plus((qb * fromStart).matmul(stack(entering, 2)));
        return new(mixed.view(batch, heads, chunks * chunk, value).narrow(2, 0, time),
            shift?.view(batch, heads, chunks * chunk, 1).narrow(2, 0, time), memory,
            ends is null ? stateShift : ends.select(2, chunks - 1).view(batch, heads));
    }

    /// <summary>
    /// The stabiliser m_t = max(lambda_t + m_(t-1), g_t), lambda_t = max_j l_t[j], as [batch, heads, chunks, C, 1], with
    /// each chunk's entering shift (the previous chunk's last m, the state's M for the first) and last shift, both
    /// [batch, heads, chunks, 1, 1]. Within a chunk m_t = max(M + Lambda_t, max_{s &lt;= t} (g_s + Lambda[t, s])), Lambda
    /// the lambdas' running sums and lags (<see cref="Lags"/>); chunk by chunk for M. Constant for the
    /// gradient: any shift gives the same function. <paramref name="weighted"/>: g_s + Lambda[t, s] ([.., C, C], -inf for
    /// s &gt; t) when already formed (one decay per head), else null.
    /// </summary>
    private static (Tensor Shift, Tensor Starts, Tensor Ends) Shifts(Tensor decays, Tensor? weighted, Tensor gate, Tensor stateShift, Tensor future)
    {
        using var _ = no_grad();
        var largest = decays.amax([-1L], keepdim: true);
        var running = largest.cumsum(3);
        weighted ??= Lags(largest, running, future).squeeze(-1).Plus(gate.squeeze(-1).unsqueeze(-2)).masked_fill(future, HeldScalars.NegativeInfinity);
        var written = weighted.amax([-1L]).unsqueeze(-1);
        long chunks = decays.shape[2], chunk = decays.shape[3];
        var starts = new Tensor[chunks];
        var shifts = new Tensor[chunks];
        var entering = stateShift.view(stateShift.shape[0], stateShift.shape[1], 1, 1);
        for (long c = 0; c < chunks; c++)
        {
            starts[c] = entering;
            shifts[c] = maximum(entering.Plus(running.select(2, c)), written.select(2, c));
            entering = shifts[c].narrow(2, chunk - 1, 1);
        }
        var shift = stack(shifts, 2);
        return (shift, stack(starts, 2), shift.narrow(3, chunk - 1, 1));
    }

    /// <summary>m with -inf (nothing written yet) taken as 0: exponents g + D - m then stay -inf instead of -inf + inf.</summary>
    private static Tensor Finite(Tensor m) => m.masked_fill(m.isneginf(), HeldScalars.Zero);

    /// <summary>The chunks' result.</summary>
    /// <param name="Output">y_t e^(-m_t) [batch, heads, time, value].</param>
    /// <param name="Shift">m_t [batch, heads, time, 1], or null when it is 0 (no gate).</param>
    /// <param name="Memory">S e^(-M) after the last step [batch, heads, key, value].</param>
    /// <param name="MemoryShift">M [batch, heads], the last step's m.</param>
    public readonly record struct Result(Tensor Output, Tensor? Shift, Tensor Memory, Tensor MemoryShift);
}
