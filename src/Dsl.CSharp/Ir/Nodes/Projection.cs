namespace Duality.Ir;

/// <summary>y_t = W x_t + b, applied at every step. W: [Out, In], b: [Out]; initially W, b ~ U(-1/sqrt(In), 1/sqrt(In)).</summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">The node it reads: [batch, time, width].</param>
/// <param name="InFeatures">In, the width of x.</param>
/// <param name="OutFeatures">Out, the width of y.</param>
/// <param name="Bias">Whether b is added (default true).</param>
/// <param name="Weights">W and b, or null to have them drawn.</param>
public sealed record Projection(string Name, NodeId Source, int InFeatures, int OutFeatures, bool Bias = true,
    ProjectionWeights? Weights = null) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source ? this : this with { Source = map(Source) };
    /// <inheritdoc/>
    public override string Describe() => $"Projection {InFeatures} -> {OutFeatures}{(Bias ? "" : " (no bias)")}";
    /// <inheritdoc/>
    public override bool HasWeights => Weights is not null;

    /// Weight [OutFeatures, InFeatures] and, with Bias, Bias [OutFeatures]; both drawn U(-1/sqrt(InFeatures), 1/sqrt(InFeatures)).
    public override IReadOnlyList<WeightSlot> WeightSlots
    {
        get
        {
            var bound = 1 / Math.Sqrt(InFeatures);
            var draw = new WeightDraw.Uniform(-bound, bound);
            var weight = new WeightSlot("Weight", [OutFeatures, InFeatures], draw, Weights?.Weight);
            return Bias ? [weight, new WeightSlot("Bias", [OutFeatures], draw, Weights?.Bias)] : [weight];
        }
    }

    internal override Node WithWeights(IReadOnlyDictionary<string, DoubleTensor> values) =>
        this with { Weights = new ProjectionWeights(values["Weight"], values.GetValueOrDefault("Bias")) };

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        var received = width(Source);
        if (!check.Positive(InFeatures, "input features") | !check.Positive(OutFeatures, "output features")
            || !check.Elements("Weight", OutFeatures, InFeatures)) return null;
        check.Input(Source, InFeatures, received,
            $"declare the projection with {received} inputs, or project to {InFeatures} first");
        if (Weights is { } w)
        {
            check.Weight("Weight", w.Weight, OutFeatures, InFeatures);
            if (Bias && w.Bias is null)
                check.Problem("missing weight", "the projection has a bias but its weights carry none", "give a Bias vector, or declare Bias = false");
            else if (!Bias && w.Bias is not null)
                check.Problem("unexpected weight", "the projection has no bias but its weights carry one", "drop the bias, or declare Bias = true");
            else if (w.Bias is not null) check.Weight("Bias", w.Bias, OutFeatures);
        }
        return OutFeatures;
    }

    internal override long CountParameters() => (long)InFeatures * OutFeatures + (Bias ? (long)OutFeatures : 0);

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources)
    {
        var x = sources[0];
        var (batch, time) = (x.GetLength(0), x.GetLength(1));
        var (w, b) = (Weights!.Weight, Weights.Bias);
        var y = new double[batch, time, OutFeatures];
        for (int i = 0; i < batch; i++)
            for (int t = 0; t < time; t++)
                for (int o = 0; o < OutFeatures; o++)
                {
                    double sum = b is null ? 0 : b[o];
                    for (int f = 0; f < InFeatures; f++) sum += w[o, f] * x[i, t, f];
                    y[i, t, o] = sum;
                }
        return y;
    }
}

/// The weights of a <see cref="Projection"/>, float64.
/// <param name="Weight">W [OutFeatures, InFeatures]: y = W x + b.</param>
/// <param name="Bias">b [OutFeatures]; null when the projection has no bias.</param>
public sealed record ProjectionWeights(DoubleTensor Weight, DoubleTensor? Bias);
