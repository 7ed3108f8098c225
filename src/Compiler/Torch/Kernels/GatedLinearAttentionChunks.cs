using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>
/// Gated linear attention in exact chunks of C steps, differentiable (TorchSharp operations), O(T C) memory; also the
/// chunked form of <see cref="Ir.Attention"/>'s causal linear kernel (one log-decay per head, no gate). With
/// l_t the log-decay of step t (per head: m = 1, or per key channel: m = key), g_t the log input gate and L_i the
/// running sum of l within a chunk, every exponent below is a sum of log-decays over steps that lie in order, so none
/// is formed as a product of a large and a small factor:
///   y_i = sum_{j &lt;= i in chunk} (sum_c q_i[c] k_j[c] e^(g_j + L_i[c] - L_j[c])) v_j  +  (q_i * e^(L_i)) S_(c-1)
///   S_c = e^(L_(C-1)) * S_(c-1) + sum_j (k_j * e^(g_j + L_(C-1) - L_j)) v_j^T
/// Decays per key channel are factored through e^(L_i) and e^(g_j - L_j) when
/// <see cref="Factorable"/> proves that exact on the data, and weighed channel by channel otherwise. The chunk is the
/// whole sequence for the masked form and 1 for one step.
/// </summary>
internal static class GatedLinearAttentionChunks
{
    /// <summary>
    /// Steps per chunk: 64 (scores [C, C] from one product); 16 for decays per key channel too strong to factor within 64
    /// steps (weights [C, C, key]).
    /// </summary>
    public const int Chunk = 64, ChannelChunk = 16;

    /// <summary>
    /// Whether every e^(x) of the queries' exponents and the keys' exponents lies within e^(+-bound), bound half the
    /// logarithm of the dtype's largest value (44 in float32, 354 in float64; -inf, a padded step's gate, gives an exact 0):
    /// the products of such factors neither overflow nor underflow for queries and keys below e^bound, so
    /// e^(g_s + L_t - L_s - m_t) = e^(L_t - m_t) e^(g_s - L_s) to rounding. Checked on the data.
    /// </summary>
    private static bool Factorable(Tensor queryExponents, Tensor keyExponents, ScalarType dtype)
    {
        var bound = dtype == ScalarType.Float64 ? 354.0 : dtype == ScalarType.Float32 ? 44.0 : 5.0;
        bool Within(Tensor x) => (x.isneginf().logical_or(x.abs() <= bound)).all().item<bool>();
        return Within(queryExponents) && Within(keyExponents);
    }

    /// <summary>
    /// q, k: [batch, heads, time, key]; v: [batch, heads, time, value]; logDecay: [batch, heads, time, 1 or key] or null;
    /// logGate: [batch, heads, time] or null; state: S e^(-M) [batch, heads, key, value] and its shift M [batch, heads]
    /// before the first step, or null for zeros (and M = -inf with a gate, 0 without).
    /// With an input gate every row t is computed scaled by e^(-m_t), m_t = max(lambda_t + m_{t-1}, g_t) (xLSTM's
    /// stabiliser, lambda_t the largest log-decay among the key channels): every exponent formed is then at most about 0,
    /// whatever the gates' scale, and the caller divides the shift out (<see cref="Result.Shift"/>). Any m gives the same
    /// function; this one keeps the exponentials finite. Without a gate m = 0.
    /// </summary>
    public static Result Run(Tensor q, Tensor k, Tensor v, Tensor? logDecay, Tensor? logGate, (Tensor Memory, Tensor Shift)? state, long chunk)
    {
        long batch = q.shape[0], heads = q.shape[1], time = q.shape[2], key = q.shape[3], value = v.shape[3];
        var memory = state?.Memory ?? zeros(batch, heads, key, value, dtype: q.dtype, device: q.device);
        var stateShift = state?.Shift ?? full(batch, heads, logGate is null ? 0.0 : double.NegativeInfinity, dtype: q.dtype, device: q.device);
        if (time == 0) return new(zeros(batch, heads, 0, value, dtype: q.dtype, device: q.device), null, memory, stateShift);
        chunk = Math.Max(1, Math.Min(chunk, time));
        long chunks = (time + chunk - 1) / chunk, padding = chunks * chunk - time;
        // padded steps carry zero keys, queries, values and log-decays (and a gate of e^-inf = 0): they change neither
        // outputs nor the state
        // contiguous per head, so the products below (and their gradients) run on their operands without copying them
        Tensor Blocks(Tensor t, double fill = 0) =>
            (padding > 0 ? nn.functional.pad(t, [0, 0, 0, padding], value: fill) : t.contiguous()).view(batch, heads, chunks, chunk, t.shape[3]);
        var (qb, kb, vb) = (Blocks(q), Blocks(k), Blocks(v));
        var logDecays = logDecay ?? zeros(batch, heads, time, 1, dtype: q.dtype, device: q.device);
        var cumulative = Blocks(logDecays).cumsum(3);
        var gate = logGate is null ? null : Blocks(logGate.unsqueeze(-1), double.NegativeInfinity);
        // m_t = max(lambda_t + m_{t-1}, g_t) = Lambda_t + max(m_(-1), max_{s <= t} (g_s - Lambda_s)), Lambda the running sum
        // of the largest log-decay over the whole sequence; a shift, so its rounding changes nothing
        Tensor? shift = null;
        if (gate is not null)
            using (no_grad())
            {
                var largest = logDecays.amax(-1);
                var total = (padding > 0 ? nn.functional.pad(largest, [0, padding]) : largest).cumsum(-1);
                var best = (gate.reshape(batch, heads, chunks * chunk) - total).cummax(-1).values;
                shift = (total + maximum(best, stateShift.unsqueeze(-1))).view(batch, heads, chunks, chunk, 1);
            }
        var ends = shift?.narrow(3, chunk - 1, 1) ?? zeros(new long[] { batch, heads, chunks, 1, 1 }, dtype: q.dtype, device: q.device);
        var starts = cat([stateShift.view(batch, heads, 1, 1, 1), ends.narrow(2, 0, chunks - 1)], 2);
        var future = CausalMask.Future(chunk, q.device);
        Tensor scores;
        if (cumulative.shape[4] == 1)
        {
            // L_t - m_t for the query t and g_s - L_s for the key s, so the [C, C] exponents take one broadcast sum
            var running = cumulative.squeeze(-1);
            var (rows, columns) = gate is null ? (running, running.neg()) : (running - shift!.squeeze(-1), gate.squeeze(-1) - running);
            var lag = rows.unsqueeze(-1) + columns.unsqueeze(-2);
            scores = (qb.matmul(kb.transpose(-2, -1)) * lag.masked_fill(future, double.NegativeInfinity).exp()).masked_fill(future, 0);
        }
        else
        {
            // e^(g_s + L_t - L_s - m_t) = e^(L_t - m_t) e^(g_s - L_s): one product when each factor lies within e^(+-bound)
            var queryExponents = shift is null ? cumulative : cumulative - shift;
            var keyExponents = gate is null ? -cumulative : gate - cumulative;
            if (Factorable(queryExponents, keyExponents, q.dtype))
                scores = (qb * queryExponents.exp()).matmul((kb * keyExponents.exp()).transpose(-2, -1)).masked_fill(future, 0);
            else if (chunk > ChannelChunk)
                return Run(q, k, v, logDecay, logGate, state, ChannelChunk);
            else
            {
                var lag = cumulative.unsqueeze(-2) - cumulative.unsqueeze(-3);
                if (gate is not null) lag = lag + gate.unsqueeze(-3) - shift!.unsqueeze(-1);
                var weights = lag.masked_fill(future.unsqueeze(-1), double.NegativeInfinity).exp();
                scores = (qb.unsqueeze(-2) * kb.unsqueeze(-3) * weights).sum(-1).masked_fill(future, 0);
            }
        }
        var local = CausalMask.Product(scores, vb);
        var last = cumulative.narrow(3, chunk - 1, 1);
        var toEnd = last - cumulative;
        if (gate is not null) toEnd = toEnd + gate - ends;
        var contributions = (kb * toEnd.exp()).transpose(-2, -1).matmul(vb);
        var carry = (last + starts - ends).exp().transpose(-2, -1);
        var fromStart = shift is null ? cumulative.exp() : (cumulative + starts - shift).exp();
        // the state entering each chunk, then what every chunk reads from its state in one product
        var entering = new Tensor[chunks];
        for (long c = 0; c < chunks; c++)
        {
            entering[c] = memory;
            memory = memory * carry.select(2, c) + contributions.select(2, c);
        }
        var mixed = local + (qb * fromStart).matmul(stack(entering, 2));
        return new(mixed.view(batch, heads, chunks * chunk, value).narrow(2, 0, time),
            shift?.view(batch, heads, chunks * chunk, 1).narrow(2, 0, time), memory, ends.select(2, chunks - 1).view(batch, heads));
    }

    /// <summary>The chunks' result.</summary>
    /// <param name="Output">y_t e^(-m_t) [batch, heads, time, value].</param>
    /// <param name="Shift">m_t [batch, heads, time, 1], or null when it is 0 (no gate).</param>
    /// <param name="Memory">S e^(-M) after the last step [batch, heads, key, value].</param>
    /// <param name="MemoryShift">M [batch, heads], the last step's m.</param>
    public readonly record struct Result(Tensor Output, Tensor? Shift, Tensor Memory, Tensor MemoryShift);
}
