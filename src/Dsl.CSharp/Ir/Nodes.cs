namespace Duality.Ir;

/// <summary>
/// A layer of a graph. Every node maps sequences [batch, time, features] to [batch, time, features'];
/// only the feature width varies, so a node's shape is its width. Names are paths ("block1/proj"),
/// unique in their graph.
/// </summary>
public abstract record Node(string Name)
{
    /// <summary>The nodes this one reads, in argument order.</summary>
    public abstract ValueList<NodeId> Sources { get; }

    /// <summary>A short description such as "Projection 64 -> 128".</summary>
    public abstract string Describe();

    /// <summary>True when every weight this node needs is present (nodes without weights: always).</summary>
    public virtual bool HasWeights => true;

    /// <summary>This node reading <paramref name="map"/>(source) for each source; the same instance when nothing moves.</summary>
    public abstract Node MapSources(Func<NodeId, NodeId> map);
}

/// <summary>A named graph input x: [batch, time, Features].</summary>
public sealed record Input(string Name, int Features) : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList<NodeId>.Empty;
    public override Node MapSources(Func<NodeId, NodeId> map) => this;
    public override string Describe() => $"Input {Features}";
}

/// <summary>y_t = W x_t + b, applied at every step. W: [Out, In], b: [Out].</summary>
public sealed record Projection(string Name, NodeId Source, int InFeatures, int OutFeatures, bool Bias = true,
    ProjectionWeights? Weights = null) : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    public override string Describe() => $"Projection {InFeatures} -> {OutFeatures}{(Bias ? "" : " (no bias)")}";
    public override bool HasWeights => Weights is not null;
}

public sealed record ProjectionWeights(DoubleTensor Weight, DoubleTensor? Bias);

/// <summary>y = value * activation(gate), elementwise; both branches have the same width.</summary>
public sealed record Gate(string Name, NodeId Value, NodeId Gating, ActivationKind Activation = ActivationKind.Identity)
    : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList.Of(Value, Gating);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Value) == Value && map(Gating) == Gating ? this : this with { Value = map(Value), Gating = map(Gating) };
    public override string Describe() =>
        Activation == ActivationKind.Identity ? "Gate (product)" : $"Gate (value * {Activation}(gate))";
}

/// <summary>
/// Diagonal linear recurrence h_t = lambda * h_{t-1} + u_t over Width neurons.
/// Lambda: [Width] (real) or [Width, 2] (complex, as re and im); required when not trainable.
/// With a Decay branch d ([1] or [Width] wide), lambda_t = sigmoid(d_t) instead, and Lambda is absent.
/// InitialState: [Width] or [Width, 2]; absent means zero. A complex state is fed u_t on its real
/// part and emits its real part, or [re; im] with <see cref="ComplexReadout.RealAndImaginary"/>.
/// </summary>
public sealed record LinearRecurrence(string Name, NodeId Source, int Width,
    StateKind State = StateKind.Real,
    ComplexReadout Readout = ComplexReadout.RealPart,
    bool TrainableLambda = true,
    NodeId? Decay = null,
    DoubleTensor? Lambda = null,
    DoubleTensor? InitialState = null) : Node(Name)
{
    public override ValueList<NodeId> Sources => Decay is { } d ? ValueList.Of(Source, d) : ValueList.Of(Source);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source && (Decay is null || map(Decay.Value) == Decay) ? this : this with { Source = map(Source), Decay = Decay is { } d ? map(d) : null };

    public override string Describe()
    {
        var state = State == StateKind.Complex ? "complex" : "real";
        var lambda = Decay is not null ? "input-dependent decay" : TrainableLambda ? "trainable lambda" : "fixed lambda";
        return $"LinearRecurrence {Width} ({state}, {lambda})";
    }

    public override bool HasWeights => Decay is not null || Lambda is not null;

    /// <summary>Width of the output: 2 Width for complex [re; im] readout, else Width.</summary>
    public int OutputWidth => State == StateKind.Complex && Readout == ComplexReadout.RealAndImaginary ? 2 * Width : Width;
}

/// <summary>
/// Multi-head self-attention over InFeatures. Per head h: q = W_Q^h x, k = W_K^h x (KeyWidth rows),
/// v = W_V^h x (ValueWidth rows). Linear kernel: y_t = sum_s w(t,s) v_s (phi(k_s) . phi(q_t)), phi the
/// FeatureMap, with the position weight
///   w(t,s) = 1                                      no decay
///   w(t,s) = gamma^(t-s)                            Decay = gamma
///   w(t,s) = gamma^(t-s) cos(theta (t-s))           Decay = gamma, DecayPhase = theta (complex decay)
///   w(t,s) = prod_{r=s+1..t} sigmoid(w_h . x_r + b_h)   InputDependentDecay (gated linear attention)
/// Softmax kernel: softmax_s(k_s . q_t / sqrt(KeyWidth)). Causal: s &lt;= t; otherwise all s. Heads are
/// concatenated, then projected by W_O to OutFeatures when given.
/// Weights: Query, Key [Heads KeyWidth, In]; Value [Heads ValueWidth, In]; Output [Out, Heads ValueWidth];
/// DecayWeight [Heads, In] and DecayBias [Heads] with an input-dependent decay.
/// </summary>
public sealed record Attention(string Name, NodeId Source, int InFeatures, int Heads, int KeyWidth, int ValueWidth,
    bool Causal = true,
    AttentionKernel Kernel = AttentionKernel.Linear,
    ActivationKind FeatureMap = ActivationKind.Identity,
    double? Decay = null,
    int? OutFeatures = null,
    AttentionWeights? Weights = null,
    double? DecayPhase = null,
    bool InputDependentDecay = false) : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };

    public override string Describe()
    {
        var kind = Kernel == AttentionKernel.Softmax ? "softmax" : "linear";
        var causal = Causal ? "causal" : "non-causal";
        var extras = (FeatureMap != ActivationKind.Identity ? $", phi = {FeatureMap}" : "")
                     + (Decay is { } g ? $", decay {g}" : "")
                     + (DecayPhase is { } theta ? $", phase {theta}" : "")
                     + (InputDependentDecay ? ", input-dependent decay" : "")
                     + (OutFeatures is { } o ? $", out {o}" : "");
        return $"Attention {InFeatures} ({causal} {kind}, {Heads} x (k {KeyWidth}, v {ValueWidth}){extras})";
    }

    public override bool HasWeights => Weights is not null;

    /// <summary>Width of the output: OutFeatures with an output projection, else Heads ValueWidth.</summary>
    public int OutputWidth => OutFeatures ?? Heads * ValueWidth;
}

public sealed record AttentionWeights(DoubleTensor Query, DoubleTensor Key, DoubleTensor Value, DoubleTensor? Output,
    DoubleTensor? DecayWeight = null, DoubleTensor? DecayBias = null);

/// <summary>y = f(x) elementwise.</summary>
public sealed record Activation(string Name, NodeId Source, ActivationKind Kind) : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    public override string Describe() => $"Activation {Kind}";
}

/// <summary>y = a + b (a residual connection when one side is the other's ancestor).</summary>
public sealed record Add(string Name, NodeId Left, NodeId Right) : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList.Of(Left, Right);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Left) == Left && map(Right) == Right ? this : this with { Left = map(Left), Right = map(Right) };
    public override string Describe() => "Add";
}

/// <summary>y = [a; b; ...] along features.</summary>
public sealed record Concat(string Name, ValueList<NodeId> Parts) : Node(Name)
{
    public override ValueList<NodeId> Sources => Parts;
    public override Node MapSources(Func<NodeId, NodeId> map) => Parts.All(p => map(p) == p) ? this : this with { Parts = Parts.Select(map).ToValueList() };
    public override string Describe() => $"Concat of {Parts.Count}";
}

/// <summary>y = x[..., Start : Start + Length].</summary>
public sealed record Slice(string Name, NodeId Source, int Start, int Length) : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    public override string Describe() => $"Slice [{Start}, {Start + Length})";
}

/// <summary>y = (x - mean) / sqrt(var + Epsilon) * g + b over features (biased variance).</summary>
public sealed record LayerNorm(string Name, NodeId Source, int Width, double Epsilon = 1e-5, bool Affine = true,
    NormWeights? Weights = null) : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    public override string Describe() => $"LayerNorm {Width}";
    public override bool HasWeights => !Affine || Weights is not null;
}

/// <summary>y = x / sqrt(mean(x^2) + Epsilon) * g over features.</summary>
public sealed record RmsNorm(string Name, NodeId Source, int Width, double Epsilon = 1e-6, bool Affine = true,
    NormWeights? Weights = null) : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    public override string Describe() => $"RmsNorm {Width}";
    public override bool HasWeights => !Affine || Weights is not null;
}

/// <summary>Gain [Width] and, for LayerNorm, bias [Width].</summary>
public sealed record NormWeights(DoubleTensor Gain, DoubleTensor? Bias);

/// <summary>y = Factor * x.</summary>
public sealed record Scale(string Name, NodeId Source, double Factor) : Node(Name)
{
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    public override string Describe() => $"Scale {Factor}";
}

/// <summary>Every concrete node kind, for coverage checks and tools.</summary>
public static class NodeKinds
{
    public static readonly IReadOnlyList<Type> All =
    [
        typeof(Input), typeof(Projection), typeof(Gate), typeof(LinearRecurrence), typeof(Attention),
        typeof(Activation), typeof(Add), typeof(Concat), typeof(Slice), typeof(LayerNorm), typeof(RmsNorm),
        typeof(Scale),
    ];
}
