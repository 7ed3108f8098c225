namespace Duality.FSharp

/// The recurrent block families as `Layers`, one function per family (the C# `Duality.Builders.Blocks`), with
/// their papers' defaults; the `...Named` forms give the block's scope.
[<RequireQualifiedAccess>]
module Blocks =
    /// minGRU: z_t = sigmoid(W_z x_t + b_z), h~_t = W_h x_t + b_h, h_t = (1 - z_t) h_{t-1} + z_t h~_t; 2 hidden (d + 1) parameters.
    let minGru hidden : Layers = fun s -> s.Then(Duality.Builders.Blocks.MinGru(hidden))

    /// minGRU under the scope `name`.
    let minGruNamed name hidden : Layers = fun s -> s.Then(Duality.Builders.Blocks.MinGru(hidden, name))

    /// minLSTM: f' h_{t-1} + i' h~_t with f' = f / (f + i), i' = i / (f + i) of sigmoid gates; 3 hidden (d + 1) parameters.
    let minLstm hidden : Layers = fun s -> s.Then(Duality.Builders.Blocks.MinLstm(hidden))

    /// minLSTM under the scope `name`.
    let minLstmNamed name hidden : Layers = fun s -> s.Then(Duality.Builders.Blocks.MinLstm(hidden, name))

    /// Griffin's gated MLP: W_down (GELU(W_gate x) * W_up x), hidden width `expansion` times the input's (Griffin: 3).
    let gatedMlp expansion : Layers = fun s -> s.Then(Duality.Builders.Blocks.GatedMlp(expansion))

    /// The gated MLP under the scope `name`.
    let gatedMlpNamed name expansion : Layers = fun s -> s.Then(Duality.Builders.Blocks.GatedMlp(expansion, name))

    /// Griffin's RG-LRU over the current width with `heads` diagonal blocks in its gates:
    /// h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t), a_t = a^(8 r_t); 2 (D^2 / H + D) + D parameters.
    let rgLru heads : Layers = fun s -> s.Then(Duality.Builders.Blocks.RgLru(heads))

    /// The RG-LRU under the scope `name`.
    let rgLruNamed name heads : Layers = fun s -> s.Then(Duality.Builders.Blocks.RgLru(heads, name))

    /// Griffin's recurrent block: W_out (GELU(W_gate x) * RG-LRU(Conv1D(W_in x))), RNN width `hidden`, `heads`, `convolution` taps.
    let griffinRecurrent hidden heads convolution : Layers =
        fun s -> s.Then(Duality.Builders.Blocks.GriffinRecurrent(System.Nullable hidden, heads, convolution))

    /// Griffin's recurrent block under the scope `name`.
    let griffinRecurrentNamed name hidden heads convolution : Layers =
        fun s -> s.Then(Duality.Builders.Blocks.GriffinRecurrent(System.Nullable hidden, heads, convolution, name))

    /// The LRU over the current width with a complex state of `state` neurons: y = Re(C h) + D x,
    /// h_t = lambda h_{t-1} + sqrt(1 - |lambda|^2) B x_t; 4 N H + 2 N + H parameters.
    let lru state : Layers = fun s -> s.Then(Duality.Builders.Blocks.Lru(state))

    /// The LRU under the scope `name`.
    let lruNamed name state : Layers = fun s -> s.Then(Duality.Builders.Blocks.Lru(state, name))

    /// DeltaNet, refused with a GraphException: its state transition I - beta k k^T is not diagonal, so no graph here computes it.
    let deltaNet heads keyWidth valueWidth : Layers = fun s -> s.Then(Duality.Builders.Blocks.DeltaNet(heads, keyWidth, valueWidth))

    /// DeltaNet under the scope `name`, refused as `deltaNet` is.
    let deltaNetNamed name heads keyWidth valueWidth : Layers = fun s -> s.Then(Duality.Builders.Blocks.DeltaNet(heads, keyWidth, valueWidth, name))

    /// A Hawk layer: x + GriffinRecurrent(RMSNorm x), then + GatedMlp(RMSNorm ...); RNN width `hidden`, `heads`, `convolution` taps, MLP `expansion`.
    let hawk hidden heads convolution expansion : Layers =
        fun s -> s.Then(Duality.Builders.Blocks.Hawk(System.Nullable hidden, heads, convolution, expansion))

    /// A Hawk layer under the scope `name`.
    let hawkNamed name hidden heads convolution expansion : Layers =
        fun s -> s.Then(Duality.Builders.Blocks.Hawk(System.Nullable hidden, heads, convolution, expansion, name))

    /// GLA: S_t = diag(alpha_t) S_{t-1} + k_t v_t^T, alpha_t = sigmoid(W_2 W_1 x_t + b)^(1/tau) per key channel, then
    /// W_O (SiLU(W_r x + b_r) * LN_heads(o)); key width d/(2H), value width d/H, rank 16, tau 16.
    let gla heads : Layers = fun s -> s.Then(Duality.Builders.Blocks.Gla(heads))

    /// GLA under the scope `name`.
    let glaNamed name heads : Layers = fun s -> s.Then(Duality.Builders.Blocks.Gla(heads, name = name))

    /// GLA with every option: key and value widths per head, the decay's rank and temperature, the scope.
    let glaWith heads (keyWidth: int option) (valueWidth: int option) decayRank temperature (blockName: string option) : Layers =
        fun s -> s.Then(Duality.Builders.Blocks.Gla(heads, Option.toNullable keyWidth, Option.toNullable valueWidth, decayRank, temperature,
                                                    Option.toObj blockName))

    /// xLSTM's mLSTM layer: C_t = f_t C_{t-1} + i_t v_t k_t^T, h_t = o_t (C_t q_t) / max(|n_t . q_t|, 1), i_t exponential;
    /// then W_out GN_heads(h); key and value widths d/H.
    let mlstm heads : Layers = fun s -> s.Then(Duality.Builders.Blocks.Mlstm(heads))

    /// The mLSTM layer under the scope `name`.
    let mlstmNamed name heads : Layers = fun s -> s.Then(Duality.Builders.Blocks.Mlstm(heads, name = name))

    /// The mLSTM layer with every option: key and value widths per head, the scope.
    let mlstmWith heads (keyWidth: int option) (valueWidth: int option) (blockName: string option) : Layers =
        fun s -> s.Then(Duality.Builders.Blocks.Mlstm(heads, Option.toNullable keyWidth, Option.toNullable valueWidth, Option.toObj blockName))

    /// RetNet's multi-scale retention: gamma_h = 1 - 2^(-5-h), xPos rotation of queries and keys, W_O (SiLU(W_G x) * GN(o));
    /// key width d/H, value width 2d/H (8 d^2 parameters).
    let retNet heads : Layers = fun s -> s.Then(Duality.Builders.Blocks.RetNet(heads))

    /// RetNet's retention under the scope `name`.
    let retNetNamed name heads : Layers = fun s -> s.Then(Duality.Builders.Blocks.RetNet(heads, name = name))

    /// RetNet's retention with every option: key (even) and value widths per head, the scope.
    let retNetWith heads (keyWidth: int option) (valueWidth: int option) (blockName: string option) : Layers =
        fun s -> s.Then(Duality.Builders.Blocks.RetNet(heads, Option.toNullable keyWidth, Option.toNullable valueWidth, Option.toObj blockName))

    /// The Mamba-2 block (SSD): per head h_t = e^(dt_t A) h_{t-1} + dt_t B_t x_t^T, o_t = h_t^T C_t + D x_t, gated RMSNorm,
    /// output projection; inner width 2d, head width 64, state 128, one group, four taps.
    let mamba2 : Layers = fun s -> s.Then(Duality.Builders.Blocks.Mamba2())

    /// The Mamba-2 block under the scope `name`.
    let mamba2Named name : Layers = fun s -> s.Then(Duality.Builders.Blocks.Mamba2(name = name))

    /// The Mamba-2 block with every option: inner width E, head width P, state N, groups G, taps k, the scope.
    let mamba2With (inner: int option) headWidth state groups convolution (blockName: string option) : Layers =
        fun s -> s.Then(Duality.Builders.Blocks.Mamba2(Option.toNullable inner, headWidth, state, groups, convolution, Option.toObj blockName))
