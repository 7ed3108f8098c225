using Duality.Reference;

namespace Duality.Ir;

/// <summary>
/// Multi-head self-attention over InFeatures. Per head h: q = W_Q^h x, k = W_K^h x (KeyWidth rows),
/// v = W_V^h x (ValueWidth rows). Linear kernel: y_t = sum_s w(t,s) v_s (phi(k_s) . phi(q_t)), phi the
/// FeatureMap, with the position weight
///   w(t,s) = 1                                      no decay
///   w(t,s) = gamma^(t-s)                            Decay = gamma
///   w(t,s) = gamma^(t-s) cos(theta (t-s))           Decay = gamma, DecayPhase = theta (complex decay)
///   w(t,s) = prod_{r=s+1..t} sigmoid(w_h . x_r + b_h)   InputDependentDecay (gated linear attention)
///   w(t,s) = gamma_h^(t-s)                          HeadDecays = [gamma_0 .. gamma_(H-1)] (multi-scale, as RetNet)
/// Softmax kernel: softmax_s(k_s . q_t / sqrt(KeyWidth)). Causal: s &lt;= t; otherwise all s. Heads are
/// concatenated, then projected by W_O to OutFeatures when given.
/// Weights: Query, Key [Heads KeyWidth, In]; Value [Heads ValueWidth, In]; Output [Out, Heads ValueWidth];
/// DecayWeight [Heads, In] and DecayBias [Heads] with an input-dependent decay. Initially
/// W_Q, W_K, W_V, w ~ N(0, 1/In), W_O ~ N(0, 1/(Heads ValueWidth)), b ~ U(1, 4) (decays near sigmoid(b), close to 1).
/// </summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">x, [batch, time, InFeatures].</param>
/// <param name="InFeatures">The width of x.</param>
/// <param name="Heads">H, at least 1.</param>
/// <param name="KeyWidth">d_k: rows of W_Q^h and W_K^h per head.</param>
/// <param name="ValueWidth">d_v: rows of W_V^h per head.</param>
/// <param name="Causal">Whether step t reads only steps s &lt;= t (default true).</param>
/// <param name="Kernel">Linear (the default) or softmax.</param>
/// <param name="FeatureMap">phi of the linear kernel, applied to keys and queries (default the identity; softmax takes none).</param>
/// <param name="Decay">gamma in (0, 1] of a causal linear attention, or null for none.</param>
/// <param name="OutFeatures">Out of the output projection W_O, or null for none (the output is then Heads*ValueWidth wide).</param>
/// <param name="Weights">W_Q, W_K, W_V (W_O, decay weights), or null to have them drawn; layout in <see cref="AttentionWeights"/>.</param>
/// <param name="DecayPhase">theta in radians, rotating the decay: w(t,s) = gamma^(t-s) cos(theta (t-s)); needs Decay.</param>
/// <param name="InputDependentDecay">Whether each head decays by sigmoid(w_h . x_r + b_h) at every step r (gated linear attention); causal linear only,
/// without Decay.</param>
/// <param name="HeadDecays">gamma_h in (0, 1] per head [Heads], each head decaying by its own gamma_h^(t-s) (RetNet's
/// multi-scale gamma_h = 1 - 2^(-5-h)); causal linear only, without Decay, DecayPhase or InputDependentDecay.</param>
public sealed record Attention(string Name, NodeId Source, int InFeatures, int Heads, int KeyWidth, int ValueWidth,
    bool Causal = true,
    AttentionKernel Kernel = AttentionKernel.Linear,
    ActivationKind FeatureMap = ActivationKind.Identity,
    double? Decay = null,
    int? OutFeatures = null,
    AttentionWeights? Weights = null,
    double? DecayPhase = null,
    bool InputDependentDecay = false,
    DoubleTensor? HeadDecays = null) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };

    /// <inheritdoc/>
    public override string Describe()
    {
        var kind = Kernel switch { AttentionKernel.Linear => "linear", AttentionKernel.Softmax => "softmax", _ => $"kernel {Kernel}" };
        var causal = Causal ? "causal" : "non-causal";
        var extras = (FeatureMap != ActivationKind.Identity ? $", phi = {FeatureMap}" : "")
                     + (Decay is { } g ? $", decay {g}" : "")
                     + (DecayPhase is { } theta ? $", phase {theta}" : "")
                     + (InputDependentDecay ? ", input-dependent decay" : "")
                     + (HeadDecays is { } perHead ? $", decays {string.Join(" ", perHead.Data.Select(v => v.ToString("G4")))}" : "")
                     + (OutFeatures is { } o ? $", out {o}" : "");
        return $"Attention {InFeatures} ({causal} {kind}, {Heads} x (k {KeyWidth}, v {ValueWidth}){extras})";
    }

    /// <inheritdoc/>
    public override bool HasWeights => Weights is not null;

    /// <summary>Width of the output: OutFeatures with an output projection, else Heads ValueWidth.</summary>
    public int OutputWidth => OutFeatures ?? Heads * ValueWidth;

    /// Query and Key [Heads*KeyWidth, InFeatures], Value [Heads*ValueWidth, InFeatures] (head-major rows: rows
    /// h*KeyWidth .. (h+1)*KeyWidth-1 belong to head h), each drawn N(0, 1/InFeatures); with OutFeatures, Output
    /// [OutFeatures, Heads*ValueWidth] ~ N(0, 1/(Heads*ValueWidth)); with an input-dependent decay, DecayWeight
    /// [Heads, InFeatures] ~ N(0, 1/InFeatures) and DecayBias [Heads] ~ U(1, 4).
    public override IReadOnlyList<WeightSlot> WeightSlots
    {
        get
        {
            var input = new WeightDraw.Gaussian(1 / Math.Sqrt(InFeatures));
            List<WeightSlot> slots =
            [
                new("Query", [Heads * KeyWidth, InFeatures], input, Weights?.Query),
                new("Key", [Heads * KeyWidth, InFeatures], input, Weights?.Key),
                new("Value", [Heads * ValueWidth, InFeatures], input, Weights?.Value),
            ];
            if (OutFeatures is { } o)
                slots.Add(new("Output", [o, Heads * ValueWidth], new WeightDraw.Gaussian(1 / Math.Sqrt(Heads * ValueWidth)), Weights?.Output));
            if (InputDependentDecay)
            {
                slots.Add(new("DecayWeight", [Heads, InFeatures], input, Weights?.DecayWeight));
                slots.Add(new("DecayBias", [Heads], new WeightDraw.Uniform(1, 4), Weights?.DecayBias));
            }
            return slots;
        }
    }

    internal override Node WithWeights(IReadOnlyDictionary<string, DoubleTensor> values) =>
        this with
        {
            Weights = new AttentionWeights(values["Query"], values["Key"], values["Value"], values.GetValueOrDefault("Output"),
                values.GetValueOrDefault("DecayWeight"), values.GetValueOrDefault("DecayBias")),
        };

    /// <summary>The layout of a per-head projection's weights, for messages: head-major rows, one column per input feature.</summary>
    private static string HeadRows(string width) =>
        $"[Heads*{width}, In], head-major: rows h*{width} .. (h+1)*{width}-1 belong to head h, one column per input feature";

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        var received = width(Source);
        if (!check.Positive(InFeatures, "input features") | !check.Positive(Heads, "heads")
            | !check.Positive(KeyWidth, "key width") | !check.Positive(ValueWidth, "value width")
            | (OutFeatures is { } o && !check.Positive(o, "output features"))
            | !check.Defined(Kernel, nameof(Kernel)) | !check.Defined(FeatureMap, nameof(FeatureMap)))
            return null;
        // Key has Query's shape, DecayWeight [Heads, In] is smaller, and Heads ValueWidth fits when Value does
        if (!check.Elements("Query", (long)Heads * KeyWidth, InFeatures) | !check.Elements("Value", (long)Heads * ValueWidth, InFeatures)
            | (OutFeatures is { } outputs && !check.Elements("Output", outputs, (long)Heads * ValueWidth)))
            return null;
        check.Input(Source, InFeatures, received, $"declare the attention with {received} inputs, or project to {InFeatures} first");
        if (Kernel == AttentionKernel.Softmax && FeatureMap != ActivationKind.Identity)
            check.Problem("unsupported combination", "softmax attention takes no feature map", "drop the feature map, or use the linear kernel");
        if (Decay is { } gamma)
        {
            if (Kernel == AttentionKernel.Softmax)
                check.Problem("unsupported combination", "a decay gamma applies to linear attention only", "drop the decay, or use the linear kernel");
            if (!Causal)
                check.Problem("unsupported combination", "a decay gamma^(t-s) needs causal attention", "make the attention causal, or drop the decay");
            if (!(gamma > 0 && gamma <= 1))
                check.Problem("invalid decay", $"gamma is {gamma}", "give a decay gamma in (0, 1]");
        }
        if (HeadDecays is { } decays)
        {
            if (Kernel == AttentionKernel.Softmax || !Causal)
                check.Problem("unsupported combination", "per-head decays need causal linear attention", "make the attention causal and linear, or drop the decays");
            if (Decay is not null || DecayPhase is not null || InputDependentDecay)
                check.Problem("unsupported combination", "per-head decays are declared beside another decay", "keep one kind of decay");
            if (decays.Shape.Count != 1 || decays.Shape[0] != Heads)
                check.Problem("invalid decay", $"{decays.Shape.Count}-axis per-head decays of {decays.Data.Count} values for {Heads} heads",
                    $"give one gamma per head, [{Heads}]");
            else if (decays.Data.Any(g => !(g > 0 && g <= 1)))
                check.Problem("invalid decay", $"the per-head decays are {string.Join(", ", decays.Data)}", "give each head a gamma in (0, 1]");
        }
        if (DecayPhase is { } theta)
        {
            if (Decay is null)
                check.Problem("unsupported combination", "a decay phase rotates a decay gamma, and none is given",
                    "give Decay = gamma with the phase (complex decay gamma e^(i theta))");
            if (!double.IsFinite(theta)) check.Problem("invalid decay", $"the phase is {theta}", "give a finite phase in radians");
        }
        if (InputDependentDecay)
        {
            if (Kernel == AttentionKernel.Softmax || !Causal)
                check.Problem("unsupported combination", "an input-dependent decay needs causal linear attention",
                    "make the attention causal and linear, or drop the input-dependent decay");
            if (Decay is not null)
                check.Problem("unsupported combination", "both a fixed decay gamma and an input-dependent decay are declared",
                    "keep one of the two decays");
        }
        if (Weights is { } w)
        {
            if (InputDependentDecay)
            {
                if (w.DecayWeight is null || w.DecayBias is null)
                    check.Problem("missing weight", "an input-dependent decay needs DecayWeight and DecayBias",
                        $"give DecayWeight [{Heads}, {InFeatures}] and DecayBias [{Heads}]");
                else
                {
                    check.Weight("DecayWeight", w.DecayWeight, Heads, InFeatures);
                    check.Weight("DecayBias", w.DecayBias, Heads);
                }
            }
            else if (w.DecayWeight is not null || w.DecayBias is not null)
                check.Problem("unexpected weight", "decay weights are given but the decay is not input-dependent",
                    "declare InputDependentDecay = true, or drop DecayWeight and DecayBias");
            check.Weight("Query", w.Query, HeadRows("KeyWidth"), Heads * KeyWidth, InFeatures);
            check.Weight("Key", w.Key, HeadRows("KeyWidth"), Heads * KeyWidth, InFeatures);
            check.Weight("Value", w.Value, HeadRows("ValueWidth"), Heads * ValueWidth, InFeatures);
            if (OutFeatures is { } outFeatures)
            {
                if (w.Output is null)
                    check.Problem("missing weight", "the attention has an output projection but no Output weights", "give Output weights, or drop OutFeatures");
                else check.Weight("Output", w.Output, "[Out, Heads*ValueWidth]: columns h*ValueWidth .. (h+1)*ValueWidth-1 read head h",
                    outFeatures, Heads * ValueWidth);
            }
            else if (w.Output is not null)
                check.Problem("unexpected weight", "Output weights are given but the attention declares no output projection",
                    "declare OutFeatures, or drop the Output weights");
        }
        return OutputWidth;
    }

    internal override long CountParameters() =>
        (long)Heads * (2L * KeyWidth + ValueWidth) * InFeatures
        + (OutFeatures is { } o ? (long)o * Heads * ValueWidth : 0)
        + (InputDependentDecay ? (long)Heads * (InFeatures + 1L) : 0);

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources)
    {
        var x = sources[0];
        var (batch, time) = (x.GetLength(0), x.GetLength(1));
        var w = Weights!;
        var mixed = new double[batch, time, Heads * ValueWidth];
        for (int i = 0; i < batch; i++)
            for (int h = 0; h < Heads; h++)
            {
                var q = SequenceMath.HeadProjection(w.Query, x, i, h * KeyWidth, KeyWidth);
                var k = SequenceMath.HeadProjection(w.Key, x, i, h * KeyWidth, KeyWidth);
                var v = SequenceMath.HeadProjection(w.Value, x, i, h * ValueWidth, ValueWidth);
                for (int t = 0; t < time; t++)
                {
                    var last = Causal ? t : time - 1;
                    var weights = new double[last + 1];
                    for (int s = 0; s <= last; s++)
                    {
                        double dot = 0;
                        for (int j = 0; j < KeyWidth; j++)
                            dot += Kernel == AttentionKernel.Linear
                                ? ScalarFunctions.Apply(FeatureMap, q[t, j]) * ScalarFunctions.Apply(FeatureMap, k[s, j])
                                : q[t, j] * k[s, j];
                        weights[s] = Kernel == AttentionKernel.Linear
                            ? dot * PositionWeight(x, i, h, t, s)
                            : dot / Math.Sqrt(KeyWidth);
                    }
                    if (Kernel == AttentionKernel.Softmax)
                    {
                        var max = weights.Max();
                        var total = 0.0;
                        for (int s = 0; s <= last; s++) total += weights[s] = Math.Exp(weights[s] - max);
                        for (int s = 0; s <= last; s++) weights[s] /= total;
                    }
                    for (int c = 0; c < ValueWidth; c++)
                    {
                        double sum = 0;
                        for (int s = 0; s <= last; s++) sum += weights[s] * v[s, c];
                        mixed[i, t, h * ValueWidth + c] = sum;
                    }
                }
            }
        if (w.Output is not { } output) return mixed;
        var y = new double[batch, time, OutputWidth];
        for (int i = 0; i < batch; i++)
            for (int t = 0; t < time; t++)
                for (int o = 0; o < OutputWidth; o++)
                {
                    double sum = 0;
                    for (int c = 0; c < Heads * ValueWidth; c++) sum += output[o, c] * mixed[i, t, c];
                    y[i, t, o] = sum;
                }
        return y;
    }

    /// <summary>w(t, s) of a linear attention: 1, gamma^(t-s), gamma^(t-s) cos(theta (t-s)), or prod_{r=s+1..t} sigmoid(w_h . x_r + b_h).</summary>
    private double PositionWeight(double[,,] x, int i, int h, int t, int s)
    {
        if (InputDependentDecay)
        {
            double product = 1;
            for (int r = s + 1; r <= t; r++)
            {
                double logit = Weights!.DecayBias![h];
                for (int f = 0; f < InFeatures; f++) logit += Weights.DecayWeight![h, f] * x[i, r, f];
                product *= ScalarFunctions.Sigmoid(logit);
            }
            return product;
        }
        var weight = Math.Pow(HeadDecays is { } decays ? decays[h] : Decay ?? 1.0, t - s);
        return DecayPhase is { } theta ? weight * Math.Cos(theta * (t - s)) : weight;
    }
}

/// The weights of an <see cref="Attention"/> node, float64, rows head-major (rows h*KeyWidth .. (h+1)*KeyWidth-1
/// belong to head h).
/// <param name="Query">W_Q [Heads*KeyWidth, InFeatures].</param>
/// <param name="Key">W_K [Heads*KeyWidth, InFeatures].</param>
/// <param name="Value">W_V [Heads*ValueWidth, InFeatures].</param>
/// <param name="Output">W_O [OutFeatures, Heads*ValueWidth] (columns h*ValueWidth .. (h+1)*ValueWidth-1 read head h);
/// null when the attention has no output projection.</param>
/// <param name="DecayWeight">w [Heads, InFeatures] of an input-dependent decay sigmoid(w_h . x_t + b_h); null otherwise.</param>
/// <param name="DecayBias">b [Heads] of an input-dependent decay; null otherwise.</param>
public sealed record AttentionWeights(DoubleTensor Query, DoubleTensor Key, DoubleTensor Value, DoubleTensor? Output,
    DoubleTensor? DecayWeight = null, DoubleTensor? DecayBias = null);
