using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>
/// Gated linear attention in exact chunks of C steps, differentiable (TorchSharp operations), O(T C) memory. With
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
    /// Whether every chunk's e^(L_t) and e^(g_s - L_s) lie within e^(+-bound), bound half the logarithm of the dtype's
    /// largest value (44 in float32, 354 in float64): the products of such factors neither overflow nor underflow for
    /// queries and keys below e^bound, so e^(g_s + L_t - L_s) = e^(L_t) e^(g_s - L_s) to rounding. Checked on the data.
    /// </summary>
    private static bool Factorable(Tensor cumulative, Tensor? gate, ScalarType dtype)
    {
        var bound = dtype == ScalarType.Float64 ? 354.0 : dtype == ScalarType.Float32 ? 44.0 : 5.0;
        var upper = gate is null ? -cumulative : gate - cumulative;
        return (cumulative.abs() <= bound).all().item<bool>() && (upper.abs() <= bound).all().item<bool>();
    }

    /// <summary>
    /// q, k: [batch, heads, time, key]; v: [batch, heads, time, value]; logDecay: [batch, heads, time, 1 or key] or null;
    /// logGate: [batch, heads, time] or null; state: S [batch, heads, key, value] before the first step, or null for zeros.
    /// Returns y [batch, heads, time, value] and S after the last step.
    /// </summary>
    public static (Tensor Output, Tensor State) Run(Tensor q, Tensor k, Tensor v, Tensor? logDecay, Tensor? logGate, Tensor? state, long chunk)
    {
        long batch = q.shape[0], heads = q.shape[1], time = q.shape[2], key = q.shape[3], value = v.shape[3];
        var memory = state ?? zeros(batch, heads, key, value, dtype: q.dtype, device: q.device);
        if (time == 0) return (zeros(batch, heads, 0, value, dtype: q.dtype, device: q.device), memory);
        chunk = Math.Max(1, Math.Min(chunk, time));
        long chunks = (time + chunk - 1) / chunk, padding = chunks * chunk - time;
        // padded steps carry zero keys, queries, values and log-decays: they change neither outputs nor the state
        Tensor Blocks(Tensor t) => (padding > 0 ? nn.functional.pad(t, [0, 0, 0, padding]) : t).view(batch, heads, chunks, chunk, t.shape[3]);
        var (qb, kb, vb) = (Blocks(q), Blocks(k), Blocks(v));
        var cumulative = Blocks(logDecay ?? zeros(batch, heads, time, 1, dtype: q.dtype, device: q.device)).cumsum(3);
        var gate = logGate is null ? null : Blocks(logGate.unsqueeze(-1));
        var future = CausalMask.Future(chunk, q.device);
        Tensor scores;
        if (cumulative.shape[4] == 1)
        {
            var running = cumulative.squeeze(-1);
            var lag = running.unsqueeze(-1) - running.unsqueeze(-2);
            if (gate is not null) lag = lag + gate.squeeze(-1).unsqueeze(-2);
            scores = (qb.matmul(kb.transpose(-2, -1)) * lag.masked_fill(future, double.NegativeInfinity).exp()).masked_fill(future, 0);
        }
        else if (Factorable(cumulative, gate, q.dtype))
        {
            // e^(g_s + L_t - L_s) = e^(L_t) e^(g_s - L_s), each factor within e^(+-bound): the weighted sum is one product
            var keys = kb * (gate is null ? -cumulative : gate - cumulative).exp();
            scores = ((qb * cumulative.exp()).matmul(keys.transpose(-2, -1))).masked_fill(future, 0);
        }
        else if (chunk > ChannelChunk)
            return Run(q, k, v, logDecay, logGate, state, ChannelChunk);
        else
        {
            var lag = cumulative.unsqueeze(-2) - cumulative.unsqueeze(-3);
            if (gate is not null) lag = lag + gate.unsqueeze(-3);
            var weights = lag.masked_fill(future.unsqueeze(-1), double.NegativeInfinity).exp();
            scores = (qb.unsqueeze(-2) * kb.unsqueeze(-3) * weights).sum(-1).masked_fill(future, 0);
        }
        var local = CausalMask.Product(scores, vb);
        var last = cumulative.narrow(3, chunk - 1, 1);
        var toEnd = last - cumulative;
        if (gate is not null) toEnd = toEnd + gate;
        var contributions = (kb * toEnd.exp()).transpose(-2, -1).matmul(vb);
        var carry = last.exp().transpose(-2, -1);
        var fromStart = cumulative.exp();
        var carried = new Tensor[chunks];
        for (long c = 0; c < chunks; c++)
        {
            carried[c] = (qb.select(2, c) * fromStart.select(2, c)).matmul(memory);
            memory = memory * carry.select(2, c) + contributions.select(2, c);
        }
        var mixed = local + stack(carried, 2);
        return (mixed.view(batch, heads, chunks * chunk, value).narrow(2, 0, time), memory);
    }
}
