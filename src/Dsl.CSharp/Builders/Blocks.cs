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
    /// s = softplus(-b) - softplus(-a) (since i/f = e^(softplus(-a) - softplus(-b))), so s ("logit") is the decay of a
    /// diagonal recurrence ("h") fed by the gate sigmoid(-s) h~ ("update"). Parameters: 3 hidden (d + 1).
    /// </summary>
    /// <param name="hidden">The state's width d_h (positive).</param>
    /// <param name="name">The block's scope; "minlstm", "minlstm_2", ... when not given.</param>
    public static Func<SequenceBuilder, SequenceBuilder> MinLstm(int hidden, string? name = null) =>
        x => x.Block(name, "minlstm", block =>
        {
            var input = block.Current;
            var forgetCost = block.Projection(hidden, name: "forget").Scale(-1, name: "forget_negated").Softplus(name: "forget_cost");
            return forgetCost.At(input)
                .Projection(hidden, name: "input").Scale(-1, name: "input_negated").Softplus(name: "input_cost")
                .Add(cost => cost.From("forget_cost").Scale(-1, name: "negated"), name: "logit")
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
}
