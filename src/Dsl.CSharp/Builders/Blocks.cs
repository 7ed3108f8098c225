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
}
