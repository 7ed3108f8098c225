using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>Causal linear attention in exact chunks, differentiable (TorchSharp operations), O(T C) memory.</summary>
internal static class ChunkedLinearAttention
{
    /// <summary>Steps per chunk C.</summary>
    public const int Chunk = 64;

    /// <summary>
    /// Causal linear attention in chunks of C steps: exact, O(T C) instead of O(T^2). With l_t the log
    /// decay of step t (ln gamma, log sigmoid(w . x_t + b), or 0) and L_i its running sum within a chunk:
    ///   y_i = sum_{j &lt;= i in chunk} e^(L_i - L_j) (q_i . k_j) v_j  +  e^(L_i) q_i S_(c-1)
    ///   S_c = e^(L_(C-1)) S_(c-1) + sum_j e^(L_(C-1) - L_j) k_j v_j^T
    /// q, k: [batch, heads, time, key]; v: [batch, heads, time, value]; logDecay: [batch, heads, time], or null for the
    /// fixed log decay <paramref name="logGamma"/> (0: none).
    /// </summary>
    public static Tensor Run(Tensor q, Tensor k, Tensor v, Tensor? logDecay, double logGamma)
    {
        long batch = q.shape[0], heads = q.shape[1], time = q.shape[2], chunks = (time + Chunk - 1) / Chunk, padding = chunks * Chunk - time;
        Tensor Blocks(Tensor t) =>
            (padding > 0 ? nn.functional.pad(t, [0, 0, 0, padding]) : t).view(batch, heads, chunks, Chunk, t.shape[3]);
        var (qb, kb, vb) = (Blocks(q), Blocks(k), Blocks(v));
        Tensor cumulative;
        if (logDecay is not null)
            cumulative = (padding > 0 ? nn.functional.pad(logDecay, [0, padding]) : logDecay).view(batch, heads, chunks, Chunk).cumsum(-1);
        else
            cumulative = arange(1, Chunk + 1, dtype: q.dtype, device: q.device) * logGamma;
        var lag = cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2);
        var causal = ones(Chunk, Chunk, dtype: ScalarType.Bool, device: q.device).tril();
        var within = where(causal, lag.clamp_max(0).exp(), zeros_like(lag));
        var local = CausalMask.Product(CausalMask.Fill(qb.matmul(kb.transpose(-2, -1)), 0) * within, vb);
        var last = cumulative.narrow(-1, Chunk - 1, 1);
        var toEnd = (last - cumulative).exp().unsqueeze(-1);
        var contributions = (kb * toEnd).transpose(-2, -1).matmul(vb);
        var carry = last.squeeze(-1).exp();
        var fromStart = cumulative.exp().unsqueeze(-1);
        var state = zeros(batch, heads, q.shape[3], v.shape[3], dtype: q.dtype, device: q.device);
        var carried = new Tensor[chunks];
        for (long c = 0; c < chunks; c++)
        {
            var decayIn = logDecay is null ? fromStart : fromStart.select(2, c);
            var totals = logDecay is null ? carry : carry.select(2, c).view(batch, heads, 1, 1);
            carried[c] = (qb.select(2, c) * decayIn).matmul(state);
            state = state * totals + contributions.select(2, c);
        }
        var mixed = local + stack(carried, 2);
        return mixed.view(batch, heads, chunks * Chunk, v.shape[3]).narrow(2, 0, time);
    }

}
