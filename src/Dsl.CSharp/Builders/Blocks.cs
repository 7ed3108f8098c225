using Duality.Ir;

namespace Duality.Builders;

/// <summary>
/// The recurrent block families of current research as graph fragments, each with its paper's equations and
/// defaults: <c>Model.Input("x", 64).Then(Blocks.MinGru(128))</c>. A block's nodes are named under its scope
/// (the given name, else the family's, numbered when used again), so its weights can be addressed by path.
/// </summary>
public static class Blocks
{
    /// <summary>
    /// minGRU (Feng et al. 2024, "Were RNNs All We Needed?"), over the current width d:
    /// z_t = sigmoid(W_z x_t + b_z), h~_t = W_h x_t + b_h, h_t = (1 - z_t) h_{t-1} + z_t h~_t, h_0 = 0.
    /// As a graph: the update z_t h~_t is a gate of two projections ("update/value/candidate", "update/gate/z"),
    /// and 1 - z_t = sigmoid(-(W_z x_t + b_z)) is the input-dependent decay of a diagonal recurrence ("h").
    /// Parameters: 2 hidden (d + 1). Output width: <paramref name="hidden"/>.
    /// </summary>
    /// <param name="hidden">The state's width d_h (positive).</param>
    /// <param name="name">The block's scope; "mingru", "mingru_2", ... when not given.</param>
    public static Func<SequenceBuilder, SequenceBuilder> MinGru(int hidden, string? name = null) =>
        x => x.Block(name, "mingru", block => block
            .Gate(value: v => v.Projection(hidden, name: "candidate"), gate: g => g.Projection(hidden, name: "z"),
                ActivationKind.Sigmoid, name: "update")
            .LinearRecurrence(hidden, decay: d => d.From("update/gate/z").Scale(-1, name: "negated"), name: "h"));

    /// <summary>
    /// minLSTM (Feng et al. 2024), over the current width d: f_t = sigmoid(W_f x_t + b_f), i_t = sigmoid(W_i x_t + b_i),
    /// h~_t = W_h x_t + b_h, f'_t = f_t / (f_t + i_t), i'_t = i_t / (f_t + i_t), h_t = f'_t h_{t-1} + i'_t h~_t, h_0 = 0.
    /// As a graph, with a = W_f x + b_f and b = W_i x + b_i: f' = sigmoid(s) and i' = 1 - f' = sigmoid(-s) for
    /// s = log f - log i = log sigmoid(a) - log sigmoid(b) (since f' / i' = f / i = e^s), so s ("logit") is the decay of a
    /// diagonal recurrence ("h") fed by the gate sigmoid(-s) h~ ("update"). Parameters: 3 hidden (d + 1).
    /// </summary>
    /// <param name="hidden">The state's width d_h (positive).</param>
    /// <param name="name">The block's scope; "minlstm", "minlstm_2", ... when not given.</param>
    public static Func<SequenceBuilder, SequenceBuilder> MinLstm(int hidden, string? name = null) =>
        x => x.Block(name, "minlstm", block =>
        {
            var input = block.Current;
            var logForget = block.Projection(hidden, name: "forget").LogSigmoid(name: "log_forget");
            return logForget.At(input)
                .Projection(hidden, name: "input").LogSigmoid(name: "log_input").Scale(-1, name: "negated")
                .Add(f => f.From("log_forget"), name: "logit")
                .At(input)
                .Gate(value: v => v.Projection(hidden, name: "candidate"), gate: g => g.From("logit").Scale(-1, name: "negated"),
                    ActivationKind.Sigmoid, name: "update")
                .LinearRecurrence(hidden, decay: d => d.From("logit"), name: "h");
        });

    /// <summary>
    /// Griffin's gated MLP block (De et al. 2024), over the current width d: y = W_down (GELU(W_gate x + b_gate) * (W_up x + b_up)) + b_down,
    /// hidden width <paramref name="expansion"/> d. Parameters: 2 (d + 1) M d + (M d + 1) d for M = expansion.
    /// </summary>
    /// <param name="expansion">The hidden width as a multiple M of the input width (Griffin: 3).</param>
    /// <param name="name">The block's scope; "mlp", "mlp_2", ... when not given.</param>
    /// <exception cref="GraphException">The expansion is below 1.</exception>
    public static Func<SequenceBuilder, SequenceBuilder> GatedMlp(int expansion = 3, string? name = null) =>
        x =>
        {
            if (expansion < 1)
                throw new GraphException(new Diagnostic("invalid option", name ?? "mlp", $"gated MLP with expansion {expansion}",
                    "give an expansion of at least 1 (Griffin uses 3)"));
            var width = x.WidthOrZero;
            return x.Block(name, "mlp", block => block
                .Gate(value: v => v.Projection(expansion * width, name: "up"), gate: g => g.Projection(expansion * width, name: "gate"),
                    ActivationKind.GELU, name: "hidden")
                .Projection(width, name: "down"));
        };

    /// <summary>
    /// Griffin's Real-Gated Linear Recurrent Unit (RG-LRU, De et al. 2024), over the current width D with
    /// <paramref name="heads"/> H: r_t = sigmoid(W_a x_t + b_a), i_t = sigmoid(W_x x_t + b_x) (W_a, W_x block-diagonal,
    /// H blocks of D/H), a_t = a^(c r_t) with a = sigmoid(Lambda) and c = 8, h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t).
    /// As a graph: log a_t = w r_t per channel, with w = c log sigmoid(Lambda) = -c softplus(-Lambda) the factors of a
    /// channel scale ("log_a", initially w ~ U(ln 0.9, ln 0.999), so a^c starts in [0.9, 0.999]); the recurrence ("h")
    /// takes log a_t as its log-decay (<see cref="DecayForm.Logarithm"/>) and x i_t sqrt(1 - a_t^2) as its input
    /// ("normalised", the <see cref="ActivationKind.DecayNormaliser"/> of log a_t). Parameters: 2 (D^2 / H + D) + D.
    /// </summary>
    /// <param name="heads">The number H of diagonal blocks of the gates' weights; it divides the width.</param>
    /// <param name="name">The block's scope; "rglru", "rglru_2", ... when not given.</param>
    /// <exception cref="GraphException">H is below 1 or does not divide the width.</exception>
    public static Func<SequenceBuilder, SequenceBuilder> RgLru(int heads = 1, string? name = null) =>
        x =>
        {
            var width = x.WidthOrZero;
            if (heads < 1 || (width > 0 && width % heads != 0))
                throw new GraphException(new Diagnostic("invalid option", name ?? "rglru", $"RG-LRU with {heads} heads over width {width}",
                    "give a number of heads of at least 1 that divides the width"));
            return x.Block(name, "rglru", block =>
            {
                var input = block.Current;
                var logDecay = BlockDiagonal(block, heads, width, "recurrence_gate").Sigmoid(name: "r")
                    .ChannelScale(Math.Log(0.9), Math.Log(0.999), name: "log_a");
                return logDecay.At(input)
                    .Gate(g => BlockDiagonal(g, heads, width, "input_gate"), ActivationKind.Sigmoid, name: "gated")
                    .Gate(g => g.From("log_a"), ActivationKind.DecayNormaliser, name: "normalised")
                    .LinearRecurrence(width, decay: d => d.From("log_a"), name: "h", decayForm: DecayForm.Logarithm);
            });
        };

    /// <summary>
    /// Griffin's recurrent block (Hawk's temporal mixing, De et al. 2024), over the current width d with RNN width D:
    /// y = W_out (GELU(W_gate x + b_gate) * RG-LRU(Conv1D(W_in x + b_in))) + b_out, the convolution causal and depthwise
    /// with <paramref name="convolution"/> taps. Parameters: 2 (d + 1) D + (k + 1) D + [2 (D^2 / H + D) + D] + (D + 1) d.
    /// </summary>
    /// <param name="hidden">The RNN width D; Griffin's 4d/3 (rounded) when not given.</param>
    /// <param name="heads">The RG-LRU's heads H (block-diagonal gates).</param>
    /// <param name="convolution">The convolution's taps k (Griffin: 4).</param>
    /// <param name="name">The block's scope; "griffin", "griffin_2", ... when not given.</param>
    public static Func<SequenceBuilder, SequenceBuilder> GriffinRecurrent(int? hidden = null, int heads = 1, int convolution = 4,
        string? name = null) =>
        x =>
        {
            var width = x.WidthOrZero;
            var rnn = hidden ?? (int)Math.Round(4.0 * width / 3);
            return x.Block(name, "griffin", block => block
                .Gate(value: v => v.Projection(rnn, name: "in").CausalConv1d(convolution, name: "conv").Then(RgLru(heads, "rglru")),
                    gate: g => g.Projection(rnn, name: "gate"), ActivationKind.GELU, name: "mix")
                .Projection(width, name: "out"));
        };

    /// <summary>
    /// The Linear Recurrent Unit (LRU, Orvieto et al. 2023), over the current width H with a complex state of
    /// <paramref name="state"/> N: h_t = lambda h_{t-1} + gamma (B x_t), y_t = Re(C h_t) + D x_t, lambda complex and
    /// diagonal, gamma = sqrt(1 - |lambda|^2) per neuron, B [N, H] and C [H, N] complex, D [H] real.
    /// As a graph: a bias-free projection to [Re B x; Im B x] ("B"), a complex recurrence reading it as complex input,
    /// normalised, emitting [re; im] ("h"), a bias-free projection of that ([Re C, -Im C], "C") and a channel scale of the
    /// input ("skip/D") added to it. lambda is kept as (re, im), the paper's exp(-exp(nu) + i theta) without the
    /// reparameterisation; it is drawn with |lambda| in [0.5, 0.99] and phase in [0, pi/4]. Parameters: 4 N H + 2 N + H.
    /// </summary>
    /// <param name="state">The complex state's width N (positive).</param>
    /// <param name="name">The block's scope; "lru", "lru_2", ... when not given.</param>
    public static Func<SequenceBuilder, SequenceBuilder> Lru(int state, string? name = null) =>
        x => x.Block(name, "lru", block =>
        {
            var (input, width) = (block.Current, block.WidthOrZero);
            return block.Projection(2 * state, bias: false, name: "B")
                .LinearRecurrence(state, state: StateKind.Complex, readout: ComplexReadout.RealAndImaginary, complexInput: true,
                    normalisedInput: true, name: "h")
                .Projection(width, bias: false, name: "C")
                .Add(skip => skip.At(input).ChannelScale(name: "D"), name: "skip");
        });

    /// <summary>
    /// A Hawk layer (De et al. 2024), over the current width d: x + R(RMSNorm(x)) with R Griffin's recurrent block, then
    /// that + MLP(RMSNorm(that)) with MLP Griffin's gated MLP: "temporal" and "feedforward" under the layer's scope.
    /// Parameters: the two blocks' (see <see cref="GriffinRecurrent"/>, <see cref="GatedMlp"/>) + 2 d (the norms' gains).
    /// </summary>
    /// <param name="hidden">The RNN width D; 4d/3 (rounded) when not given.</param>
    /// <param name="heads">The RG-LRU's heads H.</param>
    /// <param name="convolution">The convolution's taps k (4).</param>
    /// <param name="expansion">The MLP's expansion M (3).</param>
    /// <param name="name">The layer's scope; "hawk", "hawk_2", ... when not given.</param>
    public static Func<SequenceBuilder, SequenceBuilder> Hawk(int? hidden = null, int heads = 1, int convolution = 4, int expansion = 3,
        string? name = null) =>
        x => x.Block(name, "hawk", layer => layer
            .Residual(b => b.RmsNorm().Then(GriffinRecurrent(hidden, heads, convolution)), name: "temporal")
            .Residual(b => b.RmsNorm().Then(GatedMlp(expansion)), name: "feedforward"));

    /// <summary>
    /// Gated linear attention (GLA, Yang et al. 2023), over the current width d with H heads of key width d_k and value
    /// width d_v: S_t = diag(alpha_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t per head, with a data-dependent decay per key
    /// channel alpha_t = sigmoid(W_2 W_1 x_t + b)^(1/tau) (W_1 of rank r), then y = W_O (SiLU(W_r x + b_r) * LN_heads(o)).
    /// As a graph: bias-free projections "attention/query/q", "attention/key/k", "attention/value/v", the log-decay
    /// log alpha = -softplus(-(W_2 W_1 x + b)) / tau ("attention/decay"), a gated linear attention ("attention"), a group
    /// norm per head ("norm"), the output gate ("output_gate") and the bias-free projection "out".
    /// Parameters: 2 d H d_k + d H d_v + (d r + r H d_k + H d_k) + (d H d_v + H d_v) + 2 H d_v + H d_v d.
    /// </summary>
    /// <param name="heads">H (GLA: 4).</param>
    /// <param name="keyWidth">d_k per head; GLA's d / (2 H) when not given.</param>
    /// <param name="valueWidth">d_v per head; GLA's d / H when not given.</param>
    /// <param name="decayRank">r, the rank of the decay's projection (GLA: 16).</param>
    /// <param name="temperature">tau (GLA: 16).</param>
    /// <param name="name">The block's scope; "gla", "gla_2", ... when not given.</param>
    public static Func<SequenceBuilder, SequenceBuilder> Gla(int heads, int? keyWidth = null, int? valueWidth = null, int decayRank = 16,
        double temperature = 16, string? name = null) =>
        x =>
        {
            var width = x.WidthOrZero;
            int dk = keyWidth ?? PerHead(width, 2 * heads), dv = valueWidth ?? PerHead(width, heads);
            return x.Block(name, "gla", block => block
                .Gate(value: a => a.GatedLinearAttention(heads, dk, dv,
                            query: q => q.Projection(heads * dk, bias: false, name: "q"),
                            key: k => k.Projection(heads * dk, bias: false, name: "k"),
                            value: v => v.Projection(heads * dv, bias: false, name: "v"),
                            logDecay: d => d.Projection(decayRank, bias: false, name: "down").Projection(heads * dk, name: "up")
                                .LogSigmoid(name: "log_sigmoid").Scale(1 / temperature, name: "tempered"),
                            name: "attention")
                        .GroupNorm(heads, name: "norm"),
                    gate: g => g.Projection(heads * dv, name: "r"), ActivationKind.SiLU, name: "output_gate")
                .Projection(width, bias: false, name: "out"));
        };

    /// <summary>
    /// The mLSTM layer of xLSTM (Beck et al. 2024), over the current width d with H heads: per head
    /// C_t = f_t C_{t-1} + i_t v_t k_t^T, n_t = f_t n_{t-1} + i_t k_t, h_t = o_t * (C_t q_t) / max(|n_t . q_t|, 1), with
    /// k_t = W_k x_t / sqrt(d_k), f_t = sigmoid(w_f x_t + b_f), the exponential input gate i_t = e^(w_i x_t + b_i) and
    /// o_t = sigmoid(W_o x_t + b_o); then y = W_out GN_heads(h). The input gate enters as its logarithm (no exponential is
    /// formed outside the attention, whose kernels combine it with the log forget gates). As a graph: the gated linear
    /// attention "cell" (normalised, log forget gate -softplus(-(w_f x + b_f)), log input gate w_i x + b_i), the output gate
    /// "output_gate", the group norm "norm" and the bias-free projection "out".
    /// Parameters: d H (2 d_k + d_v) + 2 H (d + 1) + H d_v (d + 1) + 2 H d_v + H d_v d.
    /// </summary>
    /// <param name="heads">H (xLSTM: 4).</param>
    /// <param name="keyWidth">d_k per head; d / H when not given.</param>
    /// <param name="valueWidth">d_v per head; d / H when not given.</param>
    /// <param name="name">The block's scope; "mlstm", "mlstm_2", ... when not given.</param>
    public static Func<SequenceBuilder, SequenceBuilder> Mlstm(int heads, int? keyWidth = null, int? valueWidth = null, string? name = null) =>
        x =>
        {
            var width = x.WidthOrZero;
            int dk = keyWidth ?? PerHead(width, heads), dv = valueWidth ?? PerHead(width, heads);
            return x.Block(name, "mlstm", block => block
                .Gate(value: c => c.GatedLinearAttention(heads, dk, dv,
                        query: q => q.Projection(heads * dk, bias: false, name: "q"),
                        key: k => k.Projection(heads * dk, bias: false, name: "k").Scale(1 / Math.Sqrt(dk), name: "scaled"),
                        value: v => v.Projection(heads * dv, bias: false, name: "v"),
                        logDecay: f => f.Projection(heads, name: "forget").LogSigmoid(name: "log_sigmoid"),
                        logInputGate: i => i.Projection(heads, name: "input"),
                        normalised: true, name: "cell"),
                    gate: o => o.Projection(heads * dv, name: "o"), ActivationKind.Sigmoid, name: "output_gate")
                .GroupNorm(heads, name: "norm")
                .Projection(width, bias: false, name: "out"));
        };

    /// <summary>
    /// RetNet's multi-scale retention (Sun et al. 2023), over the current width d with H heads: per head
    /// o_t = sum_{s &lt;= t} gamma_h^(t-s) (Theta_t q_t) . (Theta_s k_s) v_s with gamma_h = 1 - 2^(-5-h), q = W_Q x,
    /// k = W_K x / sqrt(d_k), Theta_t rotating key pair j by t theta_j, theta_j = 10000^(-j/(d_k/2 - 1)) (xPos's angles
    /// without the scale, as RetNet's code draws them); then y = W_O (SiLU(W_G x) * GN_heads(o)), the group norm without
    /// gains. As a graph: "retention" (a gated linear attention with fixed per-head decays) over "retention/query/q" and
    /// "retention/key/k" rotated ("rotated"), the norm "norm", the gate "output_gate" and "out", all projections bias-free.
    /// Parameters: 2 d H d_k + 3 d H d_v (8 d^2 with RetNet's d_k = d / H, d_v = 2 d / H).
    /// </summary>
    /// <param name="heads">H.</param>
    /// <param name="keyWidth">d_k per head (even); d / H when not given.</param>
    /// <param name="valueWidth">d_v per head; 2 d / H when not given.</param>
    /// <param name="name">The block's scope; "retnet", "retnet_2", ... when not given.</param>
    public static Func<SequenceBuilder, SequenceBuilder> RetNet(int heads, int? keyWidth = null, int? valueWidth = null, string? name = null) =>
        x =>
        {
            var width = x.WidthOrZero;
            int dk = keyWidth ?? PerHead(width, heads), dv = valueWidth ?? PerHead(2 * width, heads);
            var pairs = Math.Max(dk / 2, 1);
            var angles = Enumerable.Range(0, pairs).Select(j => pairs == 1 ? 1.0 : Math.Pow(10000, -(double)j / (pairs - 1))).ToArray();
            var gammas = Enumerable.Range(0, Math.Max(heads, 1)).Select(i => 1 - Math.Pow(2, -5 - i)).ToArray();
            return x.Block(name, "retnet", block => block
                .Gate(value: r => r.GatedLinearAttention(heads, dk, dv,
                            query: q => q.Projection(heads * dk, bias: false, name: "q").Rotary(heads, angles, name: "rotated"),
                            key: k => k.Projection(heads * dk, bias: false, name: "k").Scale(1 / Math.Sqrt(dk), name: "scaled")
                                .Rotary(heads, angles, name: "rotated"),
                            value: v => v.Projection(heads * dv, bias: false, name: "v"),
                            headDecays: gammas, name: "retention")
                        .GroupNorm(heads, affine: false, name: "norm"),
                    gate: g => g.Projection(heads * dv, bias: false, name: "g"), ActivationKind.SiLU, name: "output_gate")
                .Projection(width, bias: false, name: "out"));
        };

    /// <summary>
    /// The Mamba-2 block (Dao and Gu 2024, SSD), over the current width d with inner width E, heads H = E / P of width P,
    /// state N and G groups: [x; B; C] = SiLU(Conv1D(W_xBC u)), dt_t = softplus(W_dt u_t + b_dt) [H], and per head
    /// h_t = e^(dt_t A_h) h_{t-1} + dt_t B_t x_t^T, o_t = h_t^T C_t + D * x_t, then y = W_out RMSNorm(o * SiLU(W_z u)).
    /// B and C are shared by the H / G heads of a group. As a graph: "in_xbc", "conv", "conv_act", "dt" (with b_dt as its
    /// bias), "dt_softplus", the gated linear attention "ssd" (query C and key B each a concat of their group's slice,
    /// "C0", "B0", ..., once per head, value x, log-decay A * dt through the channel scale "ssd/decay/A", log input gate log softplus(W_dt u + b_dt)),
    /// the skip "skip/D", the gate "gate" with "gate/gate/z", the norm "norm" and "out". A is drawn in [-16, -1] (Mamba's
    /// A = -exp(A_log), A_log = log U(1, 16), kept as A) and D per channel (Mamba-2's D_has_hdim).
    /// Parameters: d (2 E + 2 G N + H) + (E + 2 G N)(k + 1) + 2 H + 2 E + E d.
    /// </summary>
    /// <param name="inner">E; Mamba-2's 2 d when not given.</param>
    /// <param name="headWidth">P (Mamba-2: 64); must divide E.</param>
    /// <param name="state">N (Mamba-2: 128).</param>
    /// <param name="groups">G (Mamba-2: 1); must divide H.</param>
    /// <param name="convolution">The convolution's taps k (Mamba-2: 4).</param>
    /// <param name="name">The block's scope; "mamba2", "mamba2_2", ... when not given.</param>
    /// <exception cref="GraphException">P does not divide E, or G does not divide H.</exception>
    public static Func<SequenceBuilder, SequenceBuilder> Mamba2(int? inner = null, int headWidth = 64, int state = 128, int groups = 1,
        int convolution = 4, string? name = null) =>
        x =>
        {
            var width = x.WidthOrZero;
            var e = inner ?? 2 * width;
            if (headWidth < 1 || e % headWidth != 0)
                throw new GraphException(new Diagnostic("invalid block", name ?? "mamba2", $"Mamba-2 with inner width {e}, head width {headWidth}",
                    $"give a head width P that divides the inner width E = {e} (H = E / P heads)"));
            var heads = e / headWidth;
            if (groups < 1 || heads % groups != 0)
                throw new GraphException(new Diagnostic("invalid block", name ?? "mamba2", $"Mamba-2 with {heads} heads and {groups} groups",
                    $"give a number of groups G that divides the heads H = {heads}"));
            var n = state;
            // one slice per group of B and C, at offset `start` within [x; B; C], read by each of the group's H / G heads:
            // head h reads group h / (H / G)
            Func<SequenceBuilder, SequenceBuilder> Grouped(int start, string part) => b =>
            {
                for (int g = 0; g < groups; g++) b = b.From("conv_act").Slice(start + g * n, n, name: $"{part}{g}");
                return b.Concat(part, Enumerable.Range(0, heads).Select(h => (Func<SequenceBuilder, SequenceBuilder>)(x =>
                    x.From($"{part}{h / (heads / groups)}"))).ToArray());
            };
            return x.Block(name, "mamba2", block =>
            {
                var input = block.Current;
                return block.Projection(e + 2 * groups * n, bias: false, name: "in_xbc").CausalConv1d(convolution, name: "conv").SiLU(name: "conv_act")
                    .At(input).Projection(heads, name: "dt").Softplus(name: "dt_softplus")
                    .At(input)
                    .GatedLinearAttention(heads, n, headWidth,
                        query: Grouped(e + groups * n, "C"),
                        key: Grouped(e, "B"),
                        value: v => v.From("conv_act").Slice(0, e, name: "x"),
                        logDecay: l => l.From("dt_softplus").ChannelScale(-16, -1, name: "A"),
                        logInputGate: g => g.From("dt").LogSoftplus(name: "log_dt"),
                        name: "ssd")
                    .Add(skip => skip.From("ssd/value/x").ChannelScale(name: "D"), name: "skip")
                    .Gate(gate => gate.At(input).Projection(e, bias: false, name: "z"), ActivationKind.SiLU, name: "gate")
                    .RmsNorm(1e-5, name: "norm")
                    .Projection(width, bias: false, name: "out");
            });
        };

    /// <summary>
    /// DeltaNet (Schlag et al. 2021; Yang et al. 2024), refused: its state S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T
    /// moves by a matrix that is not diagonal (I - beta k k^T mixes the state's key channels whenever k has two nonzero
    /// entries), while every recurrence here, and so every form this library proves equal to attention, is diagonal in its
    /// state. No graph of these nodes computes it exactly, so none is built.
    /// </summary>
    /// <param name="heads">The heads DeltaNet would have.</param>
    /// <param name="keyWidth">Its key width per head.</param>
    /// <param name="valueWidth">Its value width per head.</param>
    /// <param name="name">The block's scope, named in the refusal.</param>
    /// <exception cref="GraphException">Always: the refusal, saying why and which families have an exact form.</exception>
    public static Func<SequenceBuilder, SequenceBuilder> DeltaNet(int heads, int keyWidth, int valueWidth, string? name = null) =>
        _ => throw new GraphException(new Diagnostic("no exact form", name ?? "deltanet",
            $"DeltaNet ({heads} heads, key {keyWidth}, value {valueWidth}): S_t = S_(t-1) (I - beta_t k_t k_t^T) + beta_t v_t k_t^T",
            "its state transition I - beta k k^T is not diagonal (it mixes key channels), and this library's recurrences, " +
            "its lowering and raising are exact for diagonal transitions only; use a family with a diagonal decay instead " +
            "(minGRU, minLSTM, RG-LRU, LRU, or an attention with a decay)"));

    /// <summary>A default width per head: <paramref name="total"/> shared by <paramref name="parts"/>, at least 1 (a shape
    /// problem such as 0 heads is the node's to report).</summary>
    private static int PerHead(int total, int parts) => Math.Max(1, total / Math.Max(parts, 1));

    /// <summary>W x + b with W block-diagonal: <paramref name="heads"/> blocks, each a projection of its own slice of the width.</summary>
    private static SequenceBuilder BlockDiagonal(SequenceBuilder x, int heads, int width, string name)
    {
        if (heads == 1) return x.Projection(width, name: name);
        var part = width / heads;
        return x.Concat(name, Enumerable.Range(0, heads)
            .Select(h => (Func<SequenceBuilder, SequenceBuilder>)(b => b.Slice(h * part, part, name: "in").Projection(part, name: "block")))
            .ToArray());
    }
}
