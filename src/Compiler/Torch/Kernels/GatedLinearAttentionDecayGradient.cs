using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>
/// The gradient of one log-decay per head of <see cref="GatedLinearAttentionFunction"/>, from what its reverse pass records
/// per step in the loop's frame (log a~_t, e^(g_t - m_t), delta_t): dl_t = a~_t &lt;S~_(t-1), D_t&gt;, the decayed state
/// entering step t against the state's gradient after it. In segments [f, l] of C steps, with the states expanded,
///   dl_t = sum_(u &gt;= t) A(f-1, u) q_u^T S~_(f-1) delta_u  +  A(f-1, l+1) &lt;S~_(f-1), D_(l+1)&gt;
///        + sum_(s &lt; t) A(s, l+1) kk_s^T D_(l+1) v_s  +  sum_(s &lt; t &lt;= u) A(s, u) (q_u . kk_s) (delta_u . v_s),
/// A(s, u) = prod_(r = s+1..u) a~_r from exponents summed without cancellation (each at most 0), and S~_(f-1), D_(l+1)
/// the states the reverse pass's sweeps hold where each segment begins and ends. Every term is a product of its own pair's
/// factors, none added only to be subtracted: a strong decay's gradient is 0, not the rounding of larger terms. The
/// products run as matrix products over [C, key] and [C, value]. v and delta carry the normaliser's column of ones and its
/// delta when normalised.
/// </summary>
internal static class GatedLinearAttentionDecayGradient
{
    /// <summary>Steps per segment.</summary>
    public const int Segment = 32;

    /// <summary>The largest |running sum of log a~| within a segment for which the pairs' weights are factored: e^(+-32) stays
    /// well inside float32's range, and differences of such sums lose no more than their own rounding.</summary>
    private const double Factored = 32;

    /// <summary>
    /// q, k: [batch, time, heads, key]; v: [batch, time, heads, value]; records: [batch, time, heads, 2 + value + 1] (log a~_t,
    /// e^(g_t - m_t), delta_t with the normaliser's entry); entering, returning: S~_(f-1) and D_(l+1) per segment [batch,
    /// heads, segments, key, value (+ 1 normalised)]; logDecay: the log-decays [batch, time, heads, 1] when there is no gate
    /// (then a~ = e^l and the records' first two entries are not read), else null. Returns dl [batch, time, heads, 1].
    /// </summary>
    public static Tensor Run(Tensor q, Tensor k, Tensor v, Tensor records, Tensor entering, Tensor returning, Tensor? logDecay, bool normalised)
    {
        using var _ = no_grad();
        long batch = q.shape[0], time = q.shape[1], heads = q.shape[2], width = v.shape[3];
        if (time == 0 || batch == 0) return zeros(batch, time, heads, 1, dtype: q.dtype, device: q.device);
        long chunk = Math.Max(1, Math.Min(Segment, time)), segments = (time + chunk - 1) / chunk, padding = segments * chunk - time;
        // [batch, heads, segments, chunk, last], padded steps 0 (no factor, no key, no query, no delta)
        Tensor Segments(Tensor t) =>
            nn.functional.pad(t.permute(0, 2, 1, 3), [0, 0, 0, padding]).contiguous().view(batch, heads, segments, chunk, t.shape[3]);
        var logFactors = Segments(logDecay ?? records.narrow(3, 0, 1)).squeeze(-1);
        var queries = Segments(q);
        var keys = Segments(logDecay is null ? k * records.narrow(3, 1, 1) : k);
        var deltas = Segments(records.narrow(3, 2, width + (normalised ? 1 : 0)));
        var values = Segments(normalised ? cat([v, ones(batch, time, heads, 1, dtype: v.dtype, device: v.device)], -1) : v);
        // exponents: through u from the segment's start (A(f-1, u)) and from s+1 to its end (A(s, l))
        var throughStep = logFactors.cumsum(-1);
        var toEnd = cat([logFactors.narrow(-1, 1, chunk - 1).flip(-1).cumsum(-1).flip(-1), zeros_like(logFactors.narrow(-1, 0, 1))], -1);
        // log a~ of the next segment's first step (0 after the last: nothing comes back from there)
        var next = cat([logFactors.narrow(2, 1, segments - 1).select(-1, 0), zeros(batch, heads, 1, dtype: q.dtype, device: q.device)], 2);
        var whole = throughStep.select(-1, chunk - 1) + next;
        var (before, after) = (entering, returning);
        var fromState = (throughStep.exp() * (queries.matmul(before) * deltas).sum(-1)).flip(-1).cumsum(-1).flip(-1);
        var across = (whole.exp() * (before * after).sum([-2L, -1L])).unsqueeze(-1);
        var intoGradient = (toEnd + next.unsqueeze(-1)).exp() * (keys.matmul(after) * values).sum(-1);
        var toGradient = cat([zeros_like(intoGradient.narrow(-1, 0, 1)), intoGradient.cumsum(-1).narrow(-1, 0, chunk - 1)], -1);
        // pairs s < t <= u within the segment: W[u, s] = A(s, u) (q_u . kk_s) (delta_u . v_s), summed over s < t, then u >= t
        var future = CausalMask.Future(chunk, q.device);
        var earlierOnly = ones(chunk, chunk, dtype: ScalarType.Bool, device: q.device).tril(-1).logical_not();
        Tensor pairs;
        // A(s, u) = e^(Lambda_u) e^(-Lambda_s) in the products when every running sum lies within +-Factored (the factors
        // then neither overflow nor underflow, and the exponents lose no more than the running sums' own rounding)
        if ((throughStep.abs() <= Factored).all().item<bool>())
            pairs = (queries * throughStep.exp().unsqueeze(-1)).matmul((keys * throughStep.neg().exp().unsqueeze(-1)).transpose(-2, -1))
                * deltas.matmul(values.transpose(-2, -1));
        else
        {
            var lags = GatedLinearAttentionChunks.Lags(logFactors.unsqueeze(-1), throughStep.unsqueeze(-1), future).squeeze(-1);
            pairs = queries.matmul(keys.transpose(-2, -1)) * deltas.matmul(values.transpose(-2, -1)) * lags.exp();
        }
        pairs = pairs.masked_fill(earlierOnly, 0.0);
        var earlier = cat([zeros_like(pairs.narrow(-1, 0, 1)), pairs.cumsum(-1).narrow(-1, 0, chunk - 1)], -1);
        var within = earlier.masked_fill(future, 0.0).sum(-2);
        var dl = fromState + across + toGradient + within;
        return dl.view(batch, heads, segments * chunk).narrow(2, 0, time).transpose(1, 2).unsqueeze(-1);
    }
}
