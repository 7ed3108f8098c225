using System.Collections.Immutable;
using Duality.Ir;

namespace Duality.Builders;

/// <summary>Starts a graph: <c>Model.Input("x", 16).Projection(32)...Build()</c>.</summary>
public static class Model
{
    /// A builder holding one <see cref="Ir.Input"/> named <paramref name="name"/>: sequences [batch, time, <paramref name="features"/>].
    /// A non-positive width is reported by <see cref="SequenceBuilder.Build"/>.
    public static SequenceBuilder Input(string name, int features) => SequenceBuilder.Empty.Input(name, features);
}

/// <summary>
/// An immutable, fluent view of a graph under construction, positioned at one node (the current
/// sequence). Every call returns a new builder; branches are functions from the current builder to
/// the builder at the branch's end. Default names are paths made unique within their scope.
/// Shapes are inferred as nodes are added; <see cref="Build"/> reports every problem at once.
/// </summary>
public sealed class SequenceBuilder
{
    internal static readonly SequenceBuilder Empty = new(Draft.Empty, new NodeId(-1), "");

    private readonly Draft draft;
    private readonly string scope;

    private SequenceBuilder(Draft draft, NodeId current, string scope)
    {
        this.draft = draft;
        Current = current;
        this.scope = scope;
    }

    /// <summary>The node the next layer reads.</summary>
    public NodeId Current { get; }

    /// <summary>The current node's path.</summary>
    public string CurrentName => draft.Nodes[Current.Index].Name;

    /// <summary>The current node's inferred width, or null when its shape is already in error.</summary>
    public int? Width => draft.Widths[Current.Index];

    /// <summary>The nodes built so far, in construction order.</summary>
    public IReadOnlyList<Node> Nodes => draft.Nodes;

    /// Adds another graph input named <paramref name="name"/> (in the current scope), [batch, time, <paramref name="features"/>],
    /// and continues from it; combine it with earlier nodes through <see cref="ConcatWith"/> or <see cref="Add(string, string?)"/>.
    public SequenceBuilder Input(string name, int features) => Append(new Input(Scoped(name), features));

    /// y_t = W x_t + b at every step, W [<paramref name="outFeatures"/>, In], b [<paramref name="outFeatures"/>] (none when
    /// <paramref name="bias"/> is false). In is the current width unless <paramref name="inFeatures"/> is given; given
    /// <paramref name="weights"/> are used as they are, otherwise they are drawn when compiling. Shape problems
    /// (a width below 1, weights of the wrong shape) are reported by <see cref="Build"/> in its <see cref="GraphException"/>.
    public SequenceBuilder Projection(int outFeatures, bool bias = true, string? name = null, ProjectionWeights? weights = null,
        int? inFeatures = null) =>
        Append(new Projection(Name(name, "projection"), Current, inFeatures ?? WidthOrZero, outFeatures, bias, weights));

    /// <summary>value(x) * activation(gate(x)); each branch starts at the current node.</summary>
    public SequenceBuilder Gate(Func<SequenceBuilder, SequenceBuilder> value, Func<SequenceBuilder, SequenceBuilder> gate,
        ActivationKind activation = ActivationKind.Identity, string? name = null)
    {
        var gateName = Name(name, "gate");
        var afterValue = Branch(value, gateName + "/value", draft);
        var afterGate = Branch(gate, gateName + "/gate", afterValue.draft);
        return With(afterGate.draft).Append(new Gate(gateName, afterValue.Current, afterGate.Current, activation));
    }

    /// <summary>x * activation(gate(x)): the current sequence gated by a branch of itself.</summary>
    public SequenceBuilder Gate(Func<SequenceBuilder, SequenceBuilder> gate, ActivationKind activation = ActivationKind.Identity,
        string? name = null) => Gate(x => x, gate, activation, name);

    /// <summary>
    /// h_t = lambda * h_{t-1} + u_t over the current width (or <paramref name="width"/>). Lambda values:
    /// [width] real, [width, 2] complex; required when <paramref name="trainable"/> is false. A
    /// <paramref name="decay"/> branch makes lambda_t = sigmoid(decay(x)_t), input-dependent, or e^(decay(x)_t) with
    /// <paramref name="decayForm"/> <see cref="DecayForm.Logarithm"/>. A complex state reads [re; im] inputs with
    /// <paramref name="complexInput"/>; <paramref name="normalisedInput"/> scales the input by sqrt(1 - |lambda|^2).
    /// </summary>
    public SequenceBuilder LinearRecurrence(int? width = null, bool trainable = true, DoubleTensor? lambda = null,
        StateKind state = StateKind.Real, ComplexReadout readout = ComplexReadout.RealPart, DoubleTensor? initialState = null,
        Func<SequenceBuilder, SequenceBuilder>? decay = null, string? name = null, DecayForm decayForm = DecayForm.Sigmoid,
        bool complexInput = false, bool normalisedInput = false)
    {
        var recurrenceName = Name(name, "recurrence");
        var builder = this;
        NodeId? decayId = null;
        if (decay is not null)
        {
            var afterDecay = Branch(decay, recurrenceName + "/decay", draft);
            builder = With(afterDecay.draft);
            decayId = afterDecay.Current;
            trainable = false;
        }
        var inferred = complexInput ? WidthOrZero / 2 : WidthOrZero;
        return builder.Append(new LinearRecurrence(recurrenceName, Current, width ?? inferred, state, readout, trainable,
            decayId, lambda, initialState, decayForm, complexInput, normalisedInput));
    }

    /// <summary>A recurrence with fixed real eigenvalues, one per neuron.</summary>
    public SequenceBuilder LinearRecurrence(double[] fixedLambda, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(fixedLambda);
        return LinearRecurrence(fixedLambda.Length, trainable: false, lambda: DoubleTensor.Vector(fixedLambda), name: name);
    }

    /// <summary>
    /// Self-attention over the current width. Linear by default (no softmax, no normalisation);
    /// <paramref name="decay"/> gamma weights step s at step t by gamma^(t-s), rotated by
    /// <paramref name="decayPhase"/> theta as cos(theta (t-s)); <paramref name="inputDependentDecay"/> learns a
    /// per-head decay sigmoid(w . x_t + b) instead; <paramref name="headDecays"/> gives each head its own fixed gamma_h.
    /// </summary>
    public SequenceBuilder Attention(int heads, int keyWidth, int valueWidth, int? outFeatures = null, bool causal = true,
        AttentionKernel kernel = AttentionKernel.Linear, ActivationKind featureMap = ActivationKind.Identity,
        double? decay = null, AttentionWeights? weights = null, string? name = null, double? decayPhase = null,
        bool inputDependentDecay = false, double[]? headDecays = null) =>
        Append(new Attention(Name(name, "attention"), Current, WidthOrZero, heads, keyWidth, valueWidth, causal, kernel,
            featureMap, decay, outFeatures, weights, decayPhase, inputDependentDecay, headDecays is null ? null : DoubleTensor.Vector(headDecays)));

    /// y = f(x) elementwise, f given by <paramref name="kind"/>; the default name is the kind in lower case.
    public SequenceBuilder Activation(ActivationKind kind, string? name = null) =>
        Append(new Activation(Name(name, kind.ToString().ToLowerInvariant()), Current, kind));

    /// y = 1 / (1 + e^-x) elementwise.
    public SequenceBuilder Sigmoid(string? name = null) => Activation(ActivationKind.Sigmoid, name);
    /// y = x sigmoid(x) elementwise.
    public SequenceBuilder SiLU(string? name = null) => Activation(ActivationKind.SiLU, name);
    /// y = x Phi(x) elementwise, Phi the standard normal distribution function.
    public SequenceBuilder GELU(string? name = null) => Activation(ActivationKind.GELU, name);
    /// y = tanh(x) elementwise.
    public SequenceBuilder Tanh(string? name = null) => Activation(ActivationKind.Tanh, name);
    /// y = max(0, x) elementwise.
    public SequenceBuilder ReLU(string? name = null) => Activation(ActivationKind.ReLU, name);

    /// <summary>log(1 + e^x), elementwise (Mamba-2's step size, a positive rate from any real).</summary>
    public SequenceBuilder Softplus(string? name = null) => Activation(ActivationKind.Softplus, name);

    /// <summary>log sigmoid(x) = -softplus(-x), elementwise (a log-decay in (-inf, 0): gated linear attention's log alpha).</summary>
    public SequenceBuilder LogSigmoid(string? name = null) => Activation(ActivationKind.LogSigmoid, name);

    /// <summary>log softplus(x) = log log(1 + e^x), elementwise (Mamba-2's log step size), finite for every real x.</summary>
    public SequenceBuilder LogSoftplus(string? name = null) => Activation(ActivationKind.LogSoftplus, name);
    /// <summary>e^x, elementwise (a gate given by its logarithm).</summary>
    public SequenceBuilder Exp(string? name = null) => Activation(ActivationKind.Exp, name);

    /// <summary>x + body(x). The block's nodes live under the block's name, which the sum itself takes.</summary>
    public SequenceBuilder Residual(Func<SequenceBuilder, SequenceBuilder> body, string? name = null)
    {
        var blockName = Name(name, "residual");
        var afterBody = Branch(body, blockName, draft);
        return With(afterBody.draft).Append(new Add(blockName, Current, afterBody.Current));
    }

    /// <summary>current + the node named <paramref name="other"/>.</summary>
    public SequenceBuilder Add(string other, string? name = null) => Append(new Add(Name(name, "add"), Current, Resolve(other)));

    /// <summary>current + branch(current).</summary>
    public SequenceBuilder Add(Func<SequenceBuilder, SequenceBuilder> other, string? name = null)
    {
        var addName = Name(name, "add");
        var afterOther = Branch(other, addName, draft);
        return With(afterOther.draft).Append(new Add(addName, Current, afterOther.Current));
    }

    /// <summary>[branch1(x); branch2(x); ...] along features.</summary>
    public SequenceBuilder Concat(params Func<SequenceBuilder, SequenceBuilder>[] branches) => Concat(null, branches);

    /// [branch1(x); branch2(x); ...] along features, the node named <paramref name="name"/>; branch i builds under
    /// "name/i". With no branches, <see cref="Build"/> reports an empty concat.
    public SequenceBuilder Concat(string? name, params Func<SequenceBuilder, SequenceBuilder>[] branches)
    {
        ArgumentNullException.ThrowIfNull(branches);
        var concatName = Name(name, "concat");
        var at = draft;
        var parts = new List<NodeId>();
        for (int i = 0; i < branches.Length; i++)
        {
            var after = Branch(branches[i], $"{concatName}/{i}", at);
            parts.Add(after.Current);
            at = after.draft;
        }
        return With(at).Append(new Concat(concatName, parts.ToValueList()));
    }

    /// <summary>[current; the nodes named in <paramref name="others"/>] along features.</summary>
    public SequenceBuilder ConcatWith(params string[] others)
    {
        ArgumentNullException.ThrowIfNull(others);
        return Append(new Concat(Name(null, "concat"), new[] { Current }.Concat(others.Select(Resolve)).ToValueList()));
    }

    /// y = x[..., start : start + length], features <paramref name="start"/> to <paramref name="start"/> + <paramref name="length"/> - 1;
    /// a range outside the current width is reported by <see cref="Build"/>.
    public SequenceBuilder Slice(int start, int length, string? name = null) =>
        Append(new Slice(Name(name, "slice"), Current, start, length));

    /// y = (x - mean) / sqrt(var + <paramref name="epsilon"/>) * g + b over the features (biased variance); g and b
    /// [width], present when <paramref name="affine"/> (initially 1 and 0, or taken from <paramref name="weights"/>).
    public SequenceBuilder LayerNorm(double epsilon = 1e-5, bool affine = true, string? name = null, NormWeights? weights = null) =>
        Append(new LayerNorm(Name(name, "layernorm"), Current, WidthOrZero, epsilon, affine, weights));

    /// y = x / sqrt(mean(x^2) + <paramref name="epsilon"/>) * g over the features; g [width], present when
    /// <paramref name="affine"/> (initially 1, or taken from <paramref name="weights"/>).
    public SequenceBuilder RmsNorm(double epsilon = 1e-6, bool affine = true, string? name = null, NormWeights? weights = null) =>
        Append(new RmsNorm(Name(name, "rmsnorm"), Current, WidthOrZero, epsilon, affine, weights));

    /// y = <paramref name="factor"/> * x; a factor that is not finite is reported by <see cref="Build"/>.
    public SequenceBuilder Scale(double factor, string? name = null) => Append(new Scale(Name(name, "scale"), Current, factor));

    /// <summary>Names every node built inside <paramref name="body"/> under "<paramref name="name"/>/".</summary>
    public SequenceBuilder Scope(string name, Func<SequenceBuilder, SequenceBuilder> body)
    {
        if (string.IsNullOrWhiteSpace(name))
            throw new GraphException(new Diagnostic("missing name", "(unnamed scope)", scope.Length == 0 ? "scope at the top level" : $"scope in '{scope}'",
                "give the scope a non-empty name, for example 'block1'"));
        var after = Branch(body, Scoped(name), draft);
        return new SequenceBuilder(after.draft, after.Current, scope);
    }

    /// <summary>Continues from the node named <paramref name="name"/> (relative to the scope, else absolute).</summary>
    public SequenceBuilder From(string name) => new(draft, Resolve(name), scope);

    /// <summary>Applies a reusable piece of architecture: <c>.Then(MyBlocks.Mlp(64))</c>.</summary>
    public SequenceBuilder Then(Func<SequenceBuilder, SequenceBuilder> layers) =>
        (layers ?? throw new ArgumentNullException(nameof(layers)))(this);

    /// <summary>Renames the node just built: <c>.Projection(32).Named("embed")</c> is <c>.Projection(32, name: "embed")</c>.</summary>
    public SequenceBuilder Named(string name)
    {
        if (Current.Index != draft.Nodes.Count - 1)
            throw new GraphException(new Diagnostic("misplaced rename", CurrentName ?? "(unnamed)", draft.Nodes[Current.Index].Describe(),
                $"call Named right after the call that builds the node, or pass name: to that call; the last node built is '{draft.Nodes[^1].Name}'"));
        var node = draft.Nodes[Current.Index];
        var renamed = node with { Name = Scoped(name) };
        var next = (draft with { Nodes = draft.Nodes.SetItem(Current.Index, renamed) }).WithoutName(node.Name).WithName(renamed.Name);
        return new SequenceBuilder(next, Current, scope);
    }

    /// <summary>Marks the current node as a graph output.</summary>
    public SequenceBuilder Output() =>
        draft.Outputs.Contains(Current) ? this : new(draft with { Outputs = draft.Outputs.Add(Current) }, Current, scope);

    /// <summary>Continues from the node <paramref name="id"/> of this draft (a block returning to its input).</summary>
    internal SequenceBuilder At(NodeId id) => new(draft, id, scope);

    /// <summary>
    /// A block's scope: the nodes built inside <paramref name="body"/> are named under <paramref name="name"/>, or,
    /// without one, under the first free "kind", "kind_2", ... so the same block can be used twice.
    /// </summary>
    internal SequenceBuilder Block(string? name, string kind, Func<SequenceBuilder, SequenceBuilder> body)
    {
        if (name is not null) return Scope(name, body);
        var after = Branch(body, Name(null, kind), draft);
        return new SequenceBuilder(after.draft, after.Current, scope);
    }

    /// <summary>The verified graph; outputs are the marked nodes, or the current node when none is marked.</summary>
    public Graph Build() => Graph.Create(draft.Nodes, draft.Outputs.IsEmpty ? [Current] : draft.Outputs);

    /// <summary>The current node's width, 0 when unknown (its shape rule then reports the problem).</summary>
    internal int WidthOrZero => Current.Index >= 0 ? draft.Widths[Current.Index] ?? 0 : 0;

    private SequenceBuilder With(Draft next) => new(next, Current, scope);

    /// <summary>The builder at <paramref name="node"/>, appended to the graph (a kind's own builder method, beside its record, calls this).</summary>
    internal SequenceBuilder Append(Node node)
    {
        var id = new NodeId(draft.Nodes.Count);
        var width = ShapeRules.Infer(node, id, draft.Nodes, draft.Widths, []);
        var next = (draft with { Nodes = draft.Nodes.Add(node), Widths = draft.Widths.Add(width) }).WithName(node.Name);
        return new SequenceBuilder(next, id, scope);
    }

    /// <summary>This builder, its draft grown by <paramref name="branch"/> run from the current node (named under
    /// <paramref name="branchScope"/>); <paramref name="end"/> is the branch's last node. A kind's builder method calls this.</summary>
    internal SequenceBuilder WithBranch(Func<SequenceBuilder, SequenceBuilder> branch, string branchScope, out NodeId end)
    {
        var after = Branch(branch, branchScope, draft);
        end = after.Current;
        return With(after.draft);
    }

    private SequenceBuilder Branch(Func<SequenceBuilder, SequenceBuilder> branch, string branchScope, Draft at)
    {
        ArgumentNullException.ThrowIfNull(branch);
        var result = branch(new SequenceBuilder(at, Current, branchScope));
        return result ?? throw new ArgumentException($"the branch under '{branchScope}' returned null; return the builder it was given");
    }

    private string Scoped(string name) => scope.Length == 0 ? name : $"{scope}/{name}";

    /// <summary>
    /// The node's path: the given name in this scope, or the kind's name made unique: the first of "kind", "kind_2",
    /// "kind_3", ... (in the scope) that no node has and that no path runs through. The search starts where the draft
    /// knows every earlier candidate is taken, so naming n nodes of a kind costs about n look-ups, not n^2.
    /// </summary>
    internal string Name(string? given, string kind)
    {
        if (given is not null) return Scoped(given);
        var stem = Scoped(kind);
        for (int i = draft.FirstFree(stem); ; i++)
            if (Draft.Candidate(stem, i) is var candidate && !draft.Taken(candidate)) return candidate;
    }

    private NodeId Resolve(string name)
    {
        if (name is null)
            throw new GraphException(new Diagnostic("missing name", "(null)", "referenced from " + (scope.Length == 0 ? "the top level" : $"scope '{scope}'"),
                "refer to a node by its name"));
        for (var prefix = scope; ; prefix = prefix.Contains('/') ? prefix[..prefix.LastIndexOf('/')] : "")
        {
            var path = prefix.Length == 0 ? name : $"{prefix}/{name}";
            var index = draft.Nodes.FindIndex(n => n.Name == path);
            if (index >= 0) return new NodeId(index);
            if (prefix.Length == 0) break;
        }
        throw new GraphException(new Diagnostic("unknown node", name, "referenced from " + (scope.Length == 0 ? "the top level" : $"scope '{scope}'"),
            $"refer to a node built earlier; known: {string.Join(", ", draft.Nodes.Select(n => n.Name).Take(12))}"));
    }

    /// <summary>
    /// The nodes built so far, with what default naming needs in hash tables: the names, the paths running through
    /// them (the prefixes before each '/', counted over distinct names) and, per stem, the first candidate index
    /// not known to be taken (every earlier candidate is a name or a prefix). A name removed by a rename lowers
    /// the index again, so the names given are the ones a plain search from "kind" would give.
    /// </summary>
    private sealed record Draft(ImmutableList<Node> Nodes, ImmutableList<int?> Widths, ImmutableList<NodeId> Outputs,
        ImmutableHashSet<string> Names, ImmutableDictionary<string, int> Prefixes, ImmutableDictionary<string, int> Free)
    {
        public static readonly Draft Empty = new([], [], [], [], ImmutableDictionary<string, int>.Empty, ImmutableDictionary<string, int>.Empty);

        /// <summary>Candidate 1 is the stem itself, candidate i &gt; 1 is "stem_i".</summary>
        public static string Candidate(string stem, int i) => i == 1 ? stem : $"{stem}_{i}";

        /// <summary>A default name is taken by a node, or by a path running through it (a block named like a scope).</summary>
        public bool Taken(string candidate) => Names.Contains(candidate) || Prefixes.ContainsKey(candidate);

        public int FirstFree(string stem) => Free.GetValueOrDefault(stem, 1);

        public Draft WithName(string? name)
        {
            if (name is null || Names.Contains(name)) return this;
            var prefixes = Prefixes;
            var opened = new List<string>();
            foreach (var prefix in PrefixesOf(name))
            {
                var count = prefixes.GetValueOrDefault(prefix);
                if (count == 0) opened.Add(prefix);
                prefixes = prefixes.SetItem(prefix, count + 1);
            }
            var next = this with { Names = Names.Add(name), Prefixes = prefixes };
            foreach (var taken in opened.Append(name)) next = next.Advance(taken);
            return next;
        }

        public Draft WithoutName(string? name)
        {
            if (name is null || !Names.Contains(name)) return this;
            var prefixes = Prefixes;
            var closed = new List<string>();
            foreach (var prefix in PrefixesOf(name))
            {
                var count = prefixes[prefix] - 1;
                if (count == 0) closed.Add(prefix);
                prefixes = count == 0 ? prefixes.Remove(prefix) : prefixes.SetItem(prefix, count);
            }
            var next = this with { Names = Names.Remove(name), Prefixes = prefixes };
            foreach (var freed in closed.Append(name)) next = next.Lower(freed);
            return next;
        }

        /// <summary>The candidate <paramref name="taken"/> was the first free one of its stem: move past it and those after it already taken.</summary>
        private Draft Advance(string taken)
        {
            var free = Free;
            foreach (var (stem, i) in Readings(taken))
            {
                if (free.GetValueOrDefault(stem, 1) != i) continue;
                var next = i + 1;
                while (Taken(Candidate(stem, next))) next++;
                free = free.SetItem(stem, next);
            }
            return this with { Free = free };
        }

        /// <summary>The candidate <paramref name="freed"/> may be free again: searches of its stem start no later than it.</summary>
        private Draft Lower(string freed)
        {
            var free = Free;
            foreach (var (stem, i) in Readings(freed))
                if (free.TryGetValue(stem, out var first) && first > i) free = free.SetItem(stem, i);
            return this with { Free = free };
        }

        /// <summary>Each (stem, i) whose candidate is <paramref name="name"/>: (name, 1), and (s, i) when name is "s_i" with i &gt;= 2.</summary>
        private static IEnumerable<(string Stem, int Index)> Readings(string name)
        {
            yield return (name, 1);
            var underscore = name.LastIndexOf('_');
            if (underscore <= 0 || underscore == name.Length - 1) yield break;
            var digits = name[(underscore + 1)..];
            if (digits[0] != '0' && digits.All(char.IsAsciiDigit) && int.TryParse(digits, out var i) && i >= 2)
                yield return (name[..underscore], i);
        }

        /// <summary>"a/b/c" -&gt; "a", "a/b": the paths a name runs through (one per '/').</summary>
        private static IEnumerable<string> PrefixesOf(string name)
        {
            for (int k = name.IndexOf('/'); k >= 0; k = name.IndexOf('/', k + 1)) yield return name[..k];
        }
    }
}
