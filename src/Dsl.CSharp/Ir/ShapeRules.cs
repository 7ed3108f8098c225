namespace Duality.Ir;

/// <summary>
/// Every shape rule of the IR, in one place: the width a node produces from the widths it reads,
/// and the problems with its hyper-parameters and weights. A node whose sources already failed
/// reports nothing more, so one mistake gives one diagnostic.
/// </summary>
public static class ShapeRules
{
    /// <summary>The width of <paramref name="self"/>'s output, or null when it has none; problems go to <paramref name="problems"/>.</summary>
    public static int? Infer(Node node, NodeId self, IReadOnlyList<Node> earlier, IReadOnlyList<int?> widths,
        List<Diagnostic> problems)
    {
        var check = new Checker(node, earlier, problems);
        check.Name();
        foreach (var source in node.Sources)
            if (source.Index < 0 || source.Index >= self.Index || source.Index >= earlier.Count)
                check.Problem("unknown node", $"it reads {source}, which is not an earlier node of this graph",
                    "a node may only read nodes built before it; build the source first");
        if (problems.Count > check.StartCount) return null;
        var sourceWidths = node.Sources.Select(s => widths[s.Index]).ToArray();
        if (sourceWidths.Any(w => w is null)) return null;
        int Width(NodeId id) => widths[id.Index]!.Value;
        return node switch
        {
            Input n => check.Positive(n.Features, "features") ? n.Features : null,
            Projection n => Projection(check, n, Width(n.Source)),
            Gate n => Gate(check, n, Width(n.Value), Width(n.Gating)),
            LinearRecurrence n => Recurrence(check, n, Width(n.Source), n.Decay is { } d ? Width(d) : null),
            Attention n => Attention(check, n, Width(n.Source)),
            Activation n => Width(n.Source),
            Add n => check.SameWidths(n.Left, Width(n.Left), n.Right, Width(n.Right), "add a projection on one side so both have the same width"),
            Concat n => check.Concat(n, n.Parts.Select(Width).ToArray()),
            Slice n => Slice(check, n, Width(n.Source)),
            LayerNorm n => Norm(check, n.Source, n.Width, n.Epsilon, n.Affine, n.Weights, true, Width(n.Source)),
            RmsNorm n => Norm(check, n.Source, n.Width, n.Epsilon, n.Affine, n.Weights, false, Width(n.Source)),
            Scale n => check.Require(double.IsFinite(n.Factor), "invalid factor", $"the factor is {n.Factor}",
                "give a finite scale factor") ? Width(n.Source) : null,
            _ => check.Unsupported(),
        };
    }

    private static int? Projection(Checker check, Projection n, int received)
    {
        if (!check.Positive(n.InFeatures, "input features") | !check.Positive(n.OutFeatures, "output features")) return null;
        check.Input(n.Source, n.InFeatures, received,
            $"declare the projection with {received} inputs, or project to {n.InFeatures} first");
        if (n.Weights is { } w)
        {
            check.Weight("Weight", w.Weight, n.OutFeatures, n.InFeatures);
            if (n.Bias && w.Bias is null)
                check.Problem("missing weight", "the projection has a bias but its weights carry none", "give a Bias vector, or declare Bias = false");
            else if (!n.Bias && w.Bias is not null)
                check.Problem("unexpected weight", "the projection has no bias but its weights carry one", "drop the bias, or declare Bias = true");
            else if (w.Bias is not null) check.Weight("Bias", w.Bias, n.OutFeatures);
        }
        return n.OutFeatures;
    }

    private static int? Gate(Checker check, Gate n, int value, int gating) =>
        check.SameWidths(n.Value, value, n.Gating, gating, "project one branch so both branches have the same width");

    private static int? Recurrence(Checker check, LinearRecurrence n, int received, int? decayWidth)
    {
        if (!check.Positive(n.Width, "width")) return null;
        check.Input(n.Source, n.Width, received, $"declare the recurrence with width {received}, or project to {n.Width} first");
        var complex = n.State == StateKind.Complex;
        if (n.Decay is { } decay)
        {
            if (complex)
                check.Problem("unsupported combination", "an input-dependent decay is real (sigmoid of a branch); the state is complex",
                    "use a real state with the decay branch, or a fixed complex lambda");
            if (decayWidth != 1 && decayWidth != n.Width)
                check.Mismatch("decay width mismatch", $"decay {Diagnostic.Sequence(1)} or {Diagnostic.Sequence(n.Width)}",
                    Diagnostic.Sequence(decayWidth!.Value), check.NameOf(decay),
                    $"project the decay branch to 1 (shared) or {n.Width} (per neuron) features");
            if (n.Lambda is not null || n.TrainableLambda)
                check.Problem("unexpected lambda", "lambda_t comes from the decay branch, yet lambda values or a trainable lambda are declared",
                    "drop Lambda and set TrainableLambda = false when a decay branch is given");
        }
        else if (n.Lambda is null && !n.TrainableLambda)
            check.Problem("missing weight", "lambda is fixed but no values are given", "give Lambda values, or make lambda trainable");
        if (n.Lambda is { } lambda)
        {
            if (complex) check.Weight("Lambda", lambda, n.Width, 2); else check.Weight("Lambda", lambda, n.Width);
        }
        if (n.InitialState is { } h0)
        {
            if (complex) check.Weight("InitialState", h0, n.Width, 2); else check.Weight("InitialState", h0, n.Width);
        }
        return n.OutputWidth;
    }

    private static int? Attention(Checker check, Attention n, int received)
    {
        if (!check.Positive(n.InFeatures, "input features") | !check.Positive(n.Heads, "heads")
            | !check.Positive(n.KeyWidth, "key width") | !check.Positive(n.ValueWidth, "value width")
            | (n.OutFeatures is { } o && !check.Positive(o, "output features")))
            return null;
        check.Input(n.Source, n.InFeatures, received, $"declare the attention with {received} inputs, or project to {n.InFeatures} first");
        if (n.Kernel == AttentionKernel.Softmax && n.FeatureMap != ActivationKind.Identity)
            check.Problem("unsupported combination", "softmax attention takes no feature map", "drop the feature map, or use the linear kernel");
        if (n.Decay is { } gamma)
        {
            if (n.Kernel == AttentionKernel.Softmax)
                check.Problem("unsupported combination", "a decay gamma applies to linear attention only", "drop the decay, or use the linear kernel");
            if (!n.Causal)
                check.Problem("unsupported combination", "a decay gamma^(t-s) needs causal attention", "make the attention causal, or drop the decay");
            if (!(gamma > 0 && gamma <= 1))
                check.Problem("invalid decay", $"gamma is {gamma}", "give a decay gamma in (0, 1]");
        }
        if (n.DecayPhase is { } theta)
        {
            if (n.Decay is null)
                check.Problem("unsupported combination", "a decay phase rotates a decay gamma, and none is given",
                    "give Decay = gamma with the phase (complex decay gamma e^(i theta))");
            if (!double.IsFinite(theta)) check.Problem("invalid decay", $"the phase is {theta}", "give a finite phase in radians");
        }
        if (n.InputDependentDecay)
        {
            if (n.Kernel == AttentionKernel.Softmax || !n.Causal)
                check.Problem("unsupported combination", "an input-dependent decay needs causal linear attention",
                    "make the attention causal and linear, or drop the input-dependent decay");
            if (n.Decay is not null)
                check.Problem("unsupported combination", "both a fixed decay gamma and an input-dependent decay are declared",
                    "keep one of the two decays");
        }
        if (n.Weights is { } w)
        {
            if (n.InputDependentDecay)
            {
                if (w.DecayWeight is null || w.DecayBias is null)
                    check.Problem("missing weight", "an input-dependent decay needs DecayWeight and DecayBias",
                        $"give DecayWeight [{n.Heads}, {n.InFeatures}] and DecayBias [{n.Heads}]");
                else
                {
                    check.Weight("DecayWeight", w.DecayWeight, n.Heads, n.InFeatures);
                    check.Weight("DecayBias", w.DecayBias, n.Heads);
                }
            }
            else if (w.DecayWeight is not null || w.DecayBias is not null)
                check.Problem("unexpected weight", "decay weights are given but the decay is not input-dependent",
                    "declare InputDependentDecay = true, or drop DecayWeight and DecayBias");
            check.Weight("Query", w.Query, n.Heads * n.KeyWidth, n.InFeatures);
            check.Weight("Key", w.Key, n.Heads * n.KeyWidth, n.InFeatures);
            check.Weight("Value", w.Value, n.Heads * n.ValueWidth, n.InFeatures);
            if (n.OutFeatures is { } outFeatures)
            {
                if (w.Output is null)
                    check.Problem("missing weight", "the attention has an output projection but no Output weights", "give Output weights, or drop OutFeatures");
                else check.Weight("Output", w.Output, outFeatures, n.Heads * n.ValueWidth);
            }
            else if (w.Output is not null)
                check.Problem("unexpected weight", "Output weights are given but the attention declares no output projection",
                    "declare OutFeatures, or drop the Output weights");
        }
        return n.OutputWidth;
    }

    private static int? Slice(Checker check, Slice n, int received)
    {
        if (n.Start < 0 || n.Length <= 0 || n.Start + n.Length > received)
        {
            check.Mismatch("slice out of range", $"features [{n.Start}, {n.Start + n.Length}) within {Diagnostic.Sequence(received)}",
                Diagnostic.Sequence(received), check.NameOf(n.Source),
                $"choose 0 <= start and 0 < length with start + length <= {received}");
            return null;
        }
        return n.Length;
    }

    private static int? Norm(Checker check, NodeId source, int width, double epsilon, bool affine, NormWeights? weights,
        bool hasBias, int received)
    {
        if (!check.Positive(width, "width")) return null;
        check.Input(source, width, received, $"declare the norm with width {received}");
        check.Require(epsilon > 0 && double.IsFinite(epsilon), "invalid epsilon", $"epsilon is {epsilon}", "give a small positive epsilon such as 1e-5");
        if (weights is { } w)
        {
            if (!affine)
                check.Problem("unexpected weight", "the norm is not affine but carries weights", "declare Affine = true, or drop the weights");
            check.Weight("Gain", w.Gain, width);
            if (hasBias && w.Bias is null)
                check.Problem("missing weight", "a LayerNorm's weights need a Bias", "give a Bias vector of the norm's width");
            else if (!hasBias && w.Bias is not null)
                check.Problem("unexpected weight", "an RmsNorm has no bias", "drop the Bias");
            else if (w.Bias is not null) check.Weight("Bias", w.Bias, width);
        }
        return width;
    }

    private sealed class Checker(Node node, IReadOnlyList<Node> earlier, List<Diagnostic> problems)
    {
        public int StartCount { get; } = problems.Count;

        public string NameOf(NodeId id) => id.Index >= 0 && id.Index < earlier.Count ? earlier[id.Index].Name : id.ToString();

        public void Problem(string problem, string detail, string hint) =>
            problems.Add(new Diagnostic(problem, node.Name, node.Describe(), hint, Received: detail));

        public void Mismatch(string problem, string expected, string received, string from, string hint) =>
            problems.Add(new Diagnostic(problem, node.Name, node.Describe(), hint, expected, received, from));

        public bool Require(bool condition, string problem, string detail, string hint)
        {
            if (!condition) Problem(problem, detail, hint);
            return condition;
        }

        public void Name()
        {
            if (string.IsNullOrWhiteSpace(node.Name))
                problems.Add(new Diagnostic("missing name", "(unnamed)", node.Describe(), "give every node a non-empty name"));
            else if (node.Name.Contains('.') || node.Name.Any(char.IsWhiteSpace) || node.Name.StartsWith('/') || node.Name.EndsWith('/'))
                Problem("invalid name", "names are paths of words separated by '/', without '.' or spaces",
                    "rename the node, for example 'block1/proj'");
        }

        public bool Positive(int value, string what) =>
            Require(value > 0, "invalid size", $"{what} = {value}", $"give a positive number of {what}");

        public void Input(NodeId source, int expected, int received, string hint)
        {
            if (expected != received)
                Mismatch("shape mismatch", "input " + Diagnostic.Sequence(expected), Diagnostic.Sequence(received), NameOf(source), hint);
        }

        public int? SameWidths(NodeId a, int widthA, NodeId b, int widthB, string hint)
        {
            if (widthA == widthB) return widthA;
            problems.Add(new Diagnostic("shape mismatch", node.Name, node.Describe(), hint,
                $"{Diagnostic.Sequence(widthA)} from '{NameOf(a)}' on both sides",
                Diagnostic.Sequence(widthB), NameOf(b)));
            return null;
        }

        public int? Concat(Concat n, int[] widths) =>
            Require(n.Parts.Count > 0, "empty concat", "no parts", "concatenate at least one branch") ? widths.Sum() : null;

        public void Weight(string name, DoubleTensor tensor, params int[] shape)
        {
            if (!tensor.Shape.SequenceEqual(shape))
                Mismatch("weight shape mismatch", $"{name} [{string.Join(", ", shape)}]", $"{name} {tensor.ShapeText}", node.Name,
                    $"give {name} the shape [{string.Join(", ", shape)}] or change the node's sizes");
            else if (!tensor.IsFinite)
                Problem("non-finite weight", $"{name} contains NaN or infinity", "replace the weights, or re-initialise them with a seed");
        }

        public int? Unsupported()
        {
            Problem("unknown node kind", $"{node.GetType().Name} has no shape rule", "use one of the node kinds in NodeKinds.All");
            return null;
        }
    }
}
