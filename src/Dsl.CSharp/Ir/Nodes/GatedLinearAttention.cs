using Duality.Builders;
using Duality.Ir;

namespace Duality.Ir
{

/// <summary>
/// Causal gated linear attention over given queries, keys and values: the general form of GLA, Mamba-2 (SSD),
/// mLSTM and RetNet. Per head h (head-major blocks: q_t, k_t of KeyWidth, v_t of ValueWidth), with log-decays
/// l_t (from the LogDecay branch, per head or per key channel j) and fixed per-head decays gamma_h:
///   S_t = diag(lambda_t) S_{t-1} + i_t k_t v_t^T,   lambda_t[j] = gamma_h e^(l_t[j]),   i_t = e^(g_t)
///   o_t = S_t^T q_t = sum_{s &lt;= t} sum_j q_t[j] k_s[j] v_s exp(g_s + sum_{r=s+1..t} l_r[j]) gamma_h^(t-s)
/// with g_t the LogInputGate branch (one value per head; 0 without it). Normalised (mLSTM) also keeps
/// n_t = diag(lambda_t) n_{t-1} + i_t k_t and reads y_t = o_t / max(|n_t . q_t|, 1); otherwise y_t = o_t.
/// Decays in (0, 1] have l &lt;= 0. No weights: the branches carry them.
/// </summary>
/// <param name="Name">The node's path, unique in its graph ("block1/gla").</param>
/// <param name="Query">q, [batch, time, Heads*KeyWidth].</param>
/// <param name="Key">k, [batch, time, Heads*KeyWidth].</param>
/// <param name="Value">v, [batch, time, Heads*ValueWidth].</param>
/// <param name="Heads">H, at least 1.</param>
/// <param name="KeyWidth">d_k, the key channels per head.</param>
/// <param name="ValueWidth">d_v, the value channels per head.</param>
/// <param name="LogDecay">l, [batch, time, Heads] (one decay per head) or [batch, time, Heads*KeyWidth] (one per key
/// channel, head-major); null for none.</param>
/// <param name="LogInputGate">g, [batch, time, Heads]: key s enters with weight e^(g_s); null for none.</param>
/// <param name="Normalised">Whether y_t = o_t / max(|n_t . q_t|, 1) (mLSTM's normaliser).</param>
/// <param name="HeadDecays">gamma_h in (0, 1] per head [Heads], fixed (RetNet's 1 - 2^(-5-h)); null for none.</param>
public sealed record GatedLinearAttention(string Name, NodeId Query, NodeId Key, NodeId Value, int Heads, int KeyWidth, int ValueWidth,
    NodeId? LogDecay = null, NodeId? LogInputGate = null, bool Normalised = false, DoubleTensor? HeadDecays = null) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources
    {
        get
        {
            var sources = new List<NodeId> { Query, Key, Value };
            if (LogDecay is { } decay) sources.Add(decay);
            if (LogInputGate is { } gate) sources.Add(gate);
            return sources.ToValueList();
        }
    }

    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) =>
        Sources.All(id => map(id) == id) ? this
        : this with
        {
            Query = map(Query), Key = map(Key), Value = map(Value),
            LogDecay = LogDecay is { } d ? map(d) : null, LogInputGate = LogInputGate is { } g ? map(g) : null,
        };

    /// <inheritdoc/>
    public override string Describe() =>
        $"GatedLinearAttention ({Heads} x (k {KeyWidth}, v {ValueWidth})"
        + (LogDecay is not null ? ", data-dependent decay" : "")
        + (HeadDecays is { } perHead ? $", decays {string.Join(" ", perHead.Data.Select(v => v.ToString("G4")))}" : "")
        + (LogInputGate is not null ? ", input gate" : "")
        + (Normalised ? ", normalised" : "") + ")";

    /// <summary>The position of the log-decay among <see cref="Node.Sources"/>, or -1.</summary>
    internal int LogDecayIndex => LogDecay is null ? -1 : 3;

    /// <summary>The position of the log input gate among <see cref="Node.Sources"/>, or -1.</summary>
    internal int LogInputGateIndex => LogInputGate is null ? -1 : LogDecay is null ? 3 : 4;

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        if (!check.Positive(Heads, "heads") | !check.Positive(KeyWidth, "key width") | !check.Positive(ValueWidth, "value width")
            || !check.FeatureWidth("Heads*KeyWidth", (long)Heads * KeyWidth) || !check.FeatureWidth("Heads*ValueWidth", (long)Heads * ValueWidth))
            return null;
        int keys = Heads * KeyWidth, values = Heads * ValueWidth;
        check.Input(Query, keys, width(Query), $"project the query branch to Heads*KeyWidth = {keys}");
        check.Input(Key, keys, width(Key), $"project the key branch to Heads*KeyWidth = {keys}");
        check.Input(Value, values, width(Value), $"project the value branch to Heads*ValueWidth = {values}");
        if (LogDecay is { } decay && width(decay) != Heads && width(decay) != keys)
            check.Mismatch("width mismatch", $"{Heads} (one log-decay per head) or {keys} (one per key channel)", width(decay).ToString(),
                check.NameOf(decay), $"project the decay branch to {Heads} or {keys}");
        if (LogInputGate is { } gate)
            check.Input(gate, Heads, width(gate), $"project the input-gate branch to Heads = {Heads} (one log-gate per head)");
        if (HeadDecays is { } decays)
        {
            if (decays.Shape.Count != 1 || decays.Shape[0] != Heads)
                check.Problem("invalid decay", $"{decays.Shape.Count}-axis per-head decays of {decays.Data.Count} values for {Heads} heads",
                    $"give one gamma per head, [{Heads}]");
            else if (decays.Data.Any(g => !(g > 0 && g <= 1)))
                check.Problem("invalid decay", $"the per-head decays are {string.Join(", ", decays.Data)}", "give each head a gamma in (0, 1]");
        }
        return values;
    }

    internal override long CountParameters() => 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources)
    {
        var (q, k, v) = (sources[0], sources[1], sources[2]);
        var decay = LogDecay is null ? null : sources[LogDecayIndex];
        var gate = LogInputGate is null ? null : sources[LogInputGateIndex];
        var (batch, time) = (q.GetLength(0), q.GetLength(1));
        var perChannel = decay is not null && decay.GetLength(2) != Heads;
        var y = new double[batch, time, Heads * ValueWidth];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < Heads; h++)
            {
                var logGamma = HeadDecays is { } g ? Math.Log(g[h]) : 0.0;
                for (int t = 0; t < time; t++)
                {
                    // logWeights[s, j] = g_s + sum_{r=s+1..t} (l_r[j] + log gamma_h), summed back from t
                    var logWeights = new double[t + 1, KeyWidth];
                    var running = new double[KeyWidth];
                    var largest = double.NegativeInfinity;
                    for (int s = t; s >= 0; s--)
                    {
                        if (s < t)
                            for (int j = 0; j < KeyWidth; j++)
                                running[j] += logGamma + (decay is null ? 0 : decay[b, s + 1, perChannel ? h * KeyWidth + j : h]);
                        for (int j = 0; j < KeyWidth; j++)
                            largest = Math.Max(largest, logWeights[s, j] = (gate is null ? 0 : gate[b, s, h]) + running[j]);
                    }
                    // every weight taken relative to the largest, m: o e^-m and n e^-m stay finite whatever the gates' scale
                    var shift = gate is null || double.IsNegativeInfinity(largest) ? 0 : largest;
                    double normaliser = 0;
                    var output = new double[ValueWidth];
                    for (int s = 0; s <= t; s++)
                    {
                        double score = 0;
                        for (int j = 0; j < KeyWidth; j++)
                            score += q[b, t, h * KeyWidth + j] * k[b, s, h * KeyWidth + j] * Math.Exp(logWeights[s, j] - shift);
                        normaliser += score;
                        for (int c = 0; c < ValueWidth; c++) output[c] += score * v[b, s, h * ValueWidth + c];
                    }
                    // o / max(|n . q|, 1) = (o e^-m) / max(|n . q| e^-m, e^-m)
                    for (int c = 0; c < ValueWidth; c++)
                        y[b, t, h * ValueWidth + c] = Normalised
                            ? output[c] / Math.Max(Math.Abs(normaliser), Math.Exp(-shift))
                            : output[c] * Math.Exp(shift);
                }
            }
        return y;
    }
}

}

namespace Duality.Builders
{
/// <summary>The builder method of <see cref="Ir.GatedLinearAttention"/>.</summary>
public static class GatedLinearAttentionBuilder
{
    /// <summary>
    /// Causal gated linear attention whose queries, keys and values (and optional log-decay and log input gate) are
    /// branches of the current sequence; see <see cref="Ir.GatedLinearAttention"/>. Branches build under "name/query",
    /// "name/key", "name/value", "name/decay" and "name/gate".
    /// </summary>
    public static SequenceBuilder GatedLinearAttention(this SequenceBuilder s, int heads, int keyWidth, int valueWidth,
        Func<SequenceBuilder, SequenceBuilder> query, Func<SequenceBuilder, SequenceBuilder> key, Func<SequenceBuilder, SequenceBuilder> value,
        Func<SequenceBuilder, SequenceBuilder>? logDecay = null, Func<SequenceBuilder, SequenceBuilder>? logInputGate = null,
        bool normalised = false, double[]? headDecays = null, string? name = null)
    {
        var attentionName = s.Name(name, "gla");
        var at = s.WithBranch(query, attentionName + "/query", out var queryId)
            .WithBranch(key, attentionName + "/key", out var keyId)
            .WithBranch(value, attentionName + "/value", out var valueId);
        NodeId? decayId = null, gateId = null;
        if (logDecay is not null)
        {
            at = at.WithBranch(logDecay, attentionName + "/decay", out var id);
            decayId = id;
        }
        if (logInputGate is not null)
        {
            at = at.WithBranch(logInputGate, attentionName + "/gate", out var id);
            gateId = id;
        }
        return at.Append(new GatedLinearAttention(attentionName, queryId, keyId, valueId,
            heads, keyWidth, valueWidth, decayId, gateId, normalised, headDecays is null ? null : DoubleTensor.Vector(headDecays)));
    }
}
}
