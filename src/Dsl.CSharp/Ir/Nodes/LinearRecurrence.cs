using Duality.Reference;

namespace Duality.Ir;

/// <summary>
/// Diagonal linear recurrence h_t = lambda * h_{t-1} + u_t over Width neurons.
/// Lambda: [Width] (real) or [Width, 2] (complex, as re and im); required when not trainable.
/// With a Decay branch d ([1] or [Width] wide), lambda_t = sigmoid(d_t) instead (or e^(d_t) with
/// <see cref="DecayForm.Logarithm"/>), and Lambda is absent.
/// InitialState: [Width] or [Width, 2]; absent means zero. A complex state is fed u_t on its real
/// part (or, with ComplexInput, u_t = [re; im] of 2 Width features as a complex number) and emits its real part,
/// or [re; im] with <see cref="ComplexReadout.RealAndImaginary"/>. With NormalisedInput, u_t is scaled by
/// gamma = sqrt(1 - |lambda|^2) per neuron first (the LRU's normalisation; NaN where |lambda| &gt; 1).
/// Initially lambda ~ U(0.5, 0.99); complex: r ~ U(0.5, 0.99), theta ~ U(0, pi/4) per neuron.
/// </summary>
/// <param name="Name">The node's path, unique in its graph ("block1/proj").</param>
/// <param name="Source">u, [batch, time, Width].</param>
/// <param name="Width">The neurons, each with its own lambda.</param>
/// <param name="State">Real (the default) or complex.</param>
/// <param name="Readout">What a complex state emits (default its real part).</param>
/// <param name="TrainableLambda">Whether lambda is a parameter (default true); false with Lambda given fixes it.</param>
/// <param name="Decay">The branch d giving lambda_t = sigmoid(d_t) (or e^(d_t)), or null for a lambda of its own.</param>
/// <param name="Lambda">The eigenvalues [Width] or [Width, 2], or null to have them drawn (or when Decay is given).</param>
/// <param name="InitialState">h_0, [Width] or [Width, 2]; null for zero.</param>
/// <param name="DecayForm">How the Decay branch gives lambda_t: sigmoid(d_t) (the default) or e^(d_t).</param>
/// <param name="ComplexInput">Whether a complex state reads u_t as [re; im], 2 Width features (the LRU's complex B x_t).</param>
/// <param name="NormalisedInput">Whether u_t is scaled by sqrt(1 - |lambda|^2) per neuron (needs lambda, not a decay branch).</param>
public sealed record LinearRecurrence(string Name, NodeId Source, int Width,
    StateKind State = StateKind.Real,
    ComplexReadout Readout = ComplexReadout.RealPart,
    bool TrainableLambda = true,
    NodeId? Decay = null,
    DoubleTensor? Lambda = null,
    DoubleTensor? InitialState = null,
    DecayForm DecayForm = DecayForm.Sigmoid,
    bool ComplexInput = false,
    bool NormalisedInput = false) : Node(Name)
{
    /// <inheritdoc/>
    public override ValueList<NodeId> Sources => Decay is { } d ? ValueList.Of(Source, d) : ValueList.Of(Source);
    /// <inheritdoc/>
    public override Node MapSources(Func<NodeId, NodeId> map) => map(Source) == Source && (Decay is null || map(Decay.Value) == Decay) ? this : this with { Source = map(Source), Decay = Decay is { } d ? map(d) : null };

    /// <inheritdoc/>
    public override string Describe()
    {
        var state = State == StateKind.Complex ? "complex" : "real";
        var lambda = Decay is not null ? DecayForm == DecayForm.Logarithm ? "input-dependent decay e^d" : "input-dependent decay" : TrainableLambda ? "trainable lambda" : "fixed lambda";
        var input = (ComplexInput ? ", complex input" : "") + (NormalisedInput ? ", input scaled by sqrt(1 - |lambda|^2)" : "");
        return $"LinearRecurrence {Width} ({state}, {lambda}{input})";
    }

    /// <inheritdoc/>
    public override bool HasWeights => Decay is not null || Lambda is not null;

    /// <summary>Width of the output: 2 Width for complex [re; im] readout, else Width.</summary>
    public int OutputWidth => State == StateKind.Complex && Readout == ComplexReadout.RealAndImaginary ? 2 * Width : Width;

    /// Without a Decay branch, Lambda [Width] (real) or [Width, 2] (complex, [re, im] per neuron), drawn
    /// lambda ~ U(0.5, 0.99), or r ~ U(0.5, 0.99) and theta ~ U(0, pi/4) when complex; then InitialState of the same
    /// shape, never drawn (absent means a zero state).
    public override IReadOnlyList<WeightSlot> WeightSlots
    {
        get
        {
            var complex = State == StateKind.Complex;
            int[] shape = complex ? [Width, 2] : [Width];
            var initialState = new WeightSlot("InitialState", shape, new WeightDraw.None(), InitialState);
            return Decay is null
                ? [new WeightSlot("Lambda", shape, new WeightDraw.Eigenvalues(complex, 0.5, 0.99, Math.PI / 4), Lambda), initialState]
                : [initialState];
        }
    }

    internal override Node WithWeights(IReadOnlyDictionary<string, DoubleTensor> values) =>
        this with { Lambda = values.GetValueOrDefault("Lambda"), InitialState = values.GetValueOrDefault("InitialState") };

    internal override int? InferWidth(ShapeCheck check, Func<NodeId, int> width)
    {
        var received = width(Source);
        int? decayWidth = Decay is { } d ? width(d) : null;
        if (!check.Positive(Width, "width") | !check.Defined(State, nameof(State)) | !check.Defined(Readout, nameof(Readout))
            | !check.Defined(DecayForm, nameof(DecayForm))) return null;
        var complex = State == StateKind.Complex;
        // a complex state holds [Width, 2] and may emit 2 Width features
        if (complex && !check.Elements(Decay is null ? "Lambda" : "InitialState", Width, 2)) return null;
        var inputs = ComplexInput ? 2 * Width : Width;
        check.Input(Source, inputs, received, ComplexInput
            ? $"feed [re; im] of {Width} complex inputs: project to {inputs} features first"
            : $"declare the recurrence with width {received}, or project to {Width} first");
        if (ComplexInput && !complex)
            check.Problem("unsupported combination", "a complex input needs a complex state", "declare State = Complex, or drop ComplexInput");
        if (NormalisedInput && Decay is not null)
            check.Problem("unsupported combination", "the input is scaled by sqrt(1 - |lambda|^2) of a lambda of the recurrence's own, and lambda comes from a decay branch",
                "drop NormalisedInput, or gate the input with the DecayNormaliser activation of a log-decay branch");
        if (Decay is { } decay)
        {
            if (complex)
                check.Problem("unsupported combination", "an input-dependent decay is real (sigmoid of a branch); the state is complex",
                    "use a real state with the decay branch, or a fixed complex lambda");
            if (decayWidth != 1 && decayWidth != Width)
                check.Mismatch("decay width mismatch", $"decay {Diagnostic.Sequence(1)} or {Diagnostic.Sequence(Width)}",
                    Diagnostic.Sequence(decayWidth!.Value), check.NameOf(decay),
                    $"project the decay branch to 1 (shared) or {Width} (per neuron) features");
            if (Lambda is not null || TrainableLambda)
                check.Problem("unexpected lambda", "lambda_t comes from the decay branch, yet lambda values or a trainable lambda are declared",
                    "drop Lambda and set TrainableLambda = false when a decay branch is given");
        }
        else if (DecayForm != DecayForm.Sigmoid)
            check.Problem("unexpected decay form", $"the decay form {DecayForm} reads a decay branch, and none is given",
                "give a decay branch, or drop the decay form");
        if (Decay is null && Lambda is null && !TrainableLambda)
            check.Problem("missing weight", "lambda is fixed but no values are given", "give Lambda values, or make lambda trainable");
        if (Lambda is { } lambda)
        {
            int[] shape = complex ? [Width, 2] : [Width];
            check.Weight("Lambda", lambda, shape);
            if (lambda.Shape.SequenceEqual(shape) && lambda.IsFinite) WarnWhenUnstable(check, lambda, complex);
        }
        if (InitialState is { } h0)
        {
            if (complex) check.Weight("InitialState", h0, Width, 2); else check.Weight("InitialState", h0, Width);
        }
        return OutputWidth;
    }

    /// <summary>
    /// |lambda| &gt; 1 grows the state geometrically: a unit state passes float32's largest value (3.4e38) after
    /// ln(3.4e38) / ln|lambda| steps. A warning, not an error: short sequences, or training, may still want it.
    /// </summary>
    private void WarnWhenUnstable(ShapeCheck check, DoubleTensor lambda, bool complex)
    {
        int unstable = 0;
        double largest = 0;
        for (int k = 0; k < Width; k++)
        {
            var modulus = complex ? double.Hypot(lambda[k, 0], lambda[k, 1]) : Math.Abs(lambda[k]);
            if (modulus <= 1) continue;
            unstable++;
            largest = Math.Max(largest, modulus);
        }
        if (unstable == 0) return;
        var steps = Math.Ceiling(Math.Log(float.MaxValue) / Math.Log(largest));
        check.Warn("unstable recurrence",
            $"{unstable} of {Width} neurons have |lambda| > 1, the largest {largest:G6}",
            $"a unit state overflows float32 after about {steps:N0} steps (ln 3.4e38 / ln {largest:G6}); " +
            "keep |lambda| <= 1, or make lambda input-dependent with a decay branch");
    }

    internal override long CountParameters() =>
        TrainableLambda && Decay is null ? (State == StateKind.Complex ? 2L : 1L) * Width : 0;

    internal override double[,,] Evaluate(IReadOnlyList<double[,,]> sources)
    {
        var (u, decay) = (sources[0], sources.Count > 1 ? sources[1] : null);
        var (batch, time, width) = (u.GetLength(0), u.GetLength(1), Width);
        var complex = State == StateKind.Complex;
        var y = new double[batch, time, OutputWidth];
        for (int i = 0; i < batch; i++)
            for (int k = 0; k < width; k++)
            {
                double re = 0, im = 0;
                if (InitialState is { } h0) (re, im) = complex ? (h0[k, 0], h0[k, 1]) : (h0[k], 0);
                var gain = NormalisedInput ? InputGain(k) : 1;
                for (int t = 0; t < time; t++)
                {
                    double ure = gain * u[i, t, k], uim = ComplexInput ? gain * u[i, t, width + k] : 0;
                    if (decay is not null)
                        re = DecayOf(decay[i, t, decay.GetLength(2) == 1 ? 0 : k]) * re + ure;
                    else if (!complex)
                        re = Lambda![k] * re + ure;
                    else
                    {
                        double lre = Lambda![k, 0], lim = Lambda[k, 1];
                        (re, im) = (lre * re - lim * im + ure, lre * im + lim * re + uim);
                    }
                    y[i, t, k] = re;
                    if (complex && Readout == ComplexReadout.RealAndImaginary) y[i, t, width + k] = im;
                }
            }
        return y;
    }

    /// <summary>sqrt(1 - |lambda_k|^2), neuron k's input gain with NormalisedInput.</summary>
    internal double InputGain(int k) =>
        Math.Sqrt(1 - (State == StateKind.Complex ? Lambda![k, 0] * Lambda[k, 0] + Lambda[k, 1] * Lambda[k, 1] : Lambda![k] * Lambda[k]));

    /// <summary>lambda_t from the decay branch's value d_t.</summary>
    internal double DecayOf(double d) => DecayForm == DecayForm.Logarithm ? Math.Exp(d) : ScalarFunctions.Sigmoid(d);
}
