using System.Numerics;
using Duality.Execution;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// Gated linear attention's recurrent form as one autograd operation: the fused loop forward
/// (<see cref="GatedLinearAttentionLoop"/>) and its reverse pass (<see cref="GatedLinearAttentionReverse"/>) for q, k and
/// v, the log-gates (dg_t = k_t . dk_t, the key of step t entering with e^(g_t)) and the log-decays: dl_t[j] =
/// sum_c a_t[j] S_(t-1)[j, c] dS_t[j, c], formed directly by the reverse pass (per key channel; summed over them for one
/// decay per head), and only when the log-decays take a gradient (RetNet's fixed decays do not).
/// q, k: [batch, time, heads key]; v: [batch, time, heads value]; logDecay: [batch, time, heads, 1 or key] or null;
/// logGate: [batch, time, heads] or null. Returns [batch, time, heads value]. Memory O(T) besides a state every 32 steps for the log-decays' gradient.
/// Or (<see cref="RunShared"/>) q, k and v read where they lie in up to three sources, head by head from given columns
/// (Mamba-2's B and C: each group's slice of [x; B; C] read by every head of the group), whose gradients are formed as one
/// tensor each: the heads' gradients added into the columns they read; and with a skip D ([heads value]) the output
/// y + D * v (<see cref="ValueSkip"/>), D taking the gradient sum dy * v and v the added D * dy.
/// </summary>
internal sealed class GatedLinearAttentionFunction : SingleTensorFunction<GatedLinearAttentionFunction>
{
    /// <summary>The sizes of one call, whether the output is divided by the normaliser, whether the log-decays take a
    /// gradient (set by <see cref="Run"/>), and where q, k and v lie in the sources (null: the three packed inputs).</summary>
    public sealed record Form(int Heads, int Key, int Value, bool Normalised, bool DecayGradient = false, Reading? Read = null);

    /// <summary>One of q, k and v: its source (0, 1 or 2) and the column from which each head's row starts.</summary>
    public sealed record Operand(int Source, int[] Columns);

    /// <summary>Where q, k and v lie in the sources.</summary>
    public sealed record Reading(Operand Query, Operand Key, Operand Value)
    {
        /// <summary>q, k and v where the loop reads them in <paramref name="sources"/>.</summary>
        public (LoopOperand Q, LoopOperand K, LoopOperand V) Operands(IReadOnlyList<Tensor?> sources) =>
            (LoopOperand.Of(sources[Query.Source]!, Query.Columns), LoopOperand.Of(sources[Key.Source]!, Key.Columns),
             LoopOperand.Of(sources[Value.Source]!, Value.Columns));
    }

    public override string Name => "GatedLinearAttention";

    public static Tensor Run(Tensor q, Tensor k, Tensor v, Tensor? logDecay, Tensor? logGate, Form form) =>
        apply(GradientGate.Through(q.contiguous()), GradientGate.Through(k.contiguous()), GradientGate.Through(v.contiguous()),
            logDecay?.contiguous()!, logGate?.contiguous()!, null!, form with { DecayGradient = logDecay is { requires_grad: true }, Read = null });

    /// <summary>q, k and v read from <paramref name="sources"/> (one to three distinct tensors [batch, time, width]) as
    /// <paramref name="reading"/> says; with <paramref name="skip"/> D ([heads value]), the output y + D * v
    /// (<see cref="ValueSkip"/>), D taking its gradient.</summary>
    public static Tensor RunShared(IReadOnlyList<Tensor> sources, Reading reading, Tensor? logDecay, Tensor? logGate, Form form, Tensor? skip = null)
    {
        Tensor? Source(int i) => i < sources.Count ? GradientGate.Through(sources[i]) : null;
        return apply(Source(0)!, Source(1)!, Source(2)!, logDecay?.contiguous()!, logGate?.contiguous()!,
            skip is null ? null! : GradientGate.Through(skip.contiguous()), form with { DecayGradient = logDecay is { requires_grad: true }, Read = reading });
    }

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (logDecay, logGate, skip, form) = (vars[3] as Tensor, vars[4] as Tensor, vars[5] as Tensor, (Form)vars[6]);
        var sources = vars.Take(3).Select(o => o as Tensor).ToArray();
        var first = sources[0]!;
        var y = LargeTensors.Empty([first.shape[0], first.shape[1], form.Heads * form.Value], first.dtype);
        // normalised, each step's output over the earlier steps alone: the reverse pass forms the step's own part from it
        var earlier = form.Normalised ? LargeTensors.EmptyLike(y) : null;
        var decay = Decay(logDecay, logGate);
        var (q, k, v) = Operands(sources, form);
        if (first.dtype == ScalarType.Float32) Forward<float>(q, k, v, decay, logGate, y, earlier, form);
        else Forward<double>(q, k, v, decay, logGate, y, earlier, form);
        ctx.save_for_backward([sources[0]!, sources[1]!, sources[2]!, decay!, logGate!, y, earlier!, skip!]);
        ctx.save_data("form", form);
        if (skip is null) return y;
        // y itself is kept for the reverse pass
        var skipped = LargeTensors.EmptyLike(y);
        Skip(y, v, skip, skipped, form);
        return skipped;
    }

    /// <summary>y + D * v into <paramref name="output"/> (which may be y), v read where the loop reads it.</summary>
    public static void Skip(Tensor y, LoopOperand v, Tensor skip, Tensor output, Form form)
    {
        if (y.dtype == ScalarType.Float32) Skip<float>(y, v, skip, output, form);
        else Skip<double>(y, v, skip, output, form);
    }

    /// <summary>dv += D * dy, and dD.</summary>
    private static Tensor SkipGradient(Tensor dy, LoopOperand v, Tensor skip, Tensor dv, Form form)
    {
        var dSkip = empty_like(skip);
        if (dy.dtype == ScalarType.Float32) SkipGradient<float>(dy, v, skip, dv, dSkip, form);
        else SkipGradient<double>(dy, v, skip, dv, dSkip, form);
        return dSkip;
    }

    private static unsafe void Skip<T>(Tensor y, LoopOperand v, Tensor skip, Tensor output, Form form) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(y, v.Anchor, skip, output);
        ValueSkip.Forward(RawStorage.Pointer<T>(y), v.Pointer<T>(), v.Rows, RawStorage.Pointer<T>(skip), RawStorage.Pointer<T>(output),
            y.shape[0] * y.shape[1], form.Heads, form.Value);
    }

    private static unsafe void SkipGradient<T>(Tensor dy, LoopOperand v, Tensor skip, Tensor dv, Tensor dSkip, Form form)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(dy, v.Anchor, skip, dv, dSkip);
        ValueSkip.Backward(RawStorage.Pointer<T>(dy), v.Pointer<T>(), v.Rows, RawStorage.Pointer<T>(skip), RawStorage.Pointer<T>(dv),
            RawStorage.Pointer<T>(dSkip), dy.shape[0] * dy.shape[1], form.Heads, form.Value);
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () => ReversePass(ctx, grad));

    private static List<Tensor> ReversePass(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        Tensor? Optional(Tensor t) => t is { IsInvalid: false } ? t : null;
        var sources = new[] { Optional(saved[0]), Optional(saved[1]), Optional(saved[2]) };
        var (decay, logGate, y, earlier, skip) = (Optional(saved[3]), Optional(saved[4]), saved[5], Optional(saved[6]), Optional(saved[7]));
        var form = (Form)ctx.get_data("form");
        var dy = grad.contiguous();
        var first = sources[0]!;
        long batch = first.shape[0], time = first.shape[1];
        var (q, k, v) = Operands(sources, form);
        var (dq, dk, dv) = (LargeTensors.Empty([batch, time, form.Heads * form.Key], first.dtype),
            LargeTensors.Empty([batch, time, form.Heads * form.Key], first.dtype), LargeTensors.Empty([batch, time, form.Heads * form.Value], first.dtype));
        // the log-decays' gradient, formed by the reverse pass per key channel or per head
        var (perKey, perHead) = (decay is not null && form.DecayGradient && decay.shape[3] > 1, decay is not null && form.DecayGradient && decay.shape[3] == 1);
        var terms = perKey ? LargeTensors.EmptyLike(dq) : null;
        var headTerms = perHead ? LargeTensors.Empty([batch, time, form.Heads, 1], first.dtype) : null;
        // dg_t = k_t . dk_t head by head, formed by the reverse pass as each dk_t is
        var dGate = logGate is null ? null : LargeTensors.Empty([batch, time, form.Heads], first.dtype);
        if (first.dtype == ScalarType.Float32) Backward<float>(q, k, v, decay, logGate, y, earlier, dy, dq, dk, dv, terms, headTerms, dGate, form);
        else Backward<double>(q, k, v, decay, logGate, y, earlier, dy, dq, dk, dv, terms, headTerms, dGate, form);
        Tensor PerKey(Tensor t) => t.view(batch, time, form.Heads, form.Key);
        var dLogDecay = terms is not null ? PerKey(terms) : headTerms;
        var dSkip = skip is null ? null : SkipGradient(dy, v, skip, dv, form);
        if (form.Read is not { } reading) return [dq, dk, dv, dLogDecay!, dGate!, dSkip!, null!];
        var gradients = sources.Select((source, i) => source is null ? null
            : Gathered(source, [(reading.Query, dq, form.Key), (reading.Key, dk, form.Key), (reading.Value, dv, form.Value)], i, form.Heads)).ToArray();
        return [gradients[0]!, gradients[1]!, gradients[2]!, dLogDecay!, dGate!, dSkip!, null!];
    }

    /// <summary>
    /// Heads <see cref="Head"/> to <see cref="Head"/> + <see cref="Count"/> - 1 reading one slice from <see cref="Column"/>
    /// (shared), or slices side by side from it (adjacent, as packed heads are).
    /// </summary>
    private readonly record struct HeadRun(int Head, int Count, int Column, bool Shared);

    /// <summary>The heads in runs, in order: each run as long as its heads share their column or follow one another.</summary>
    private static List<HeadRun> Runs(int[] columns, int width)
    {
        var runs = new List<HeadRun>();
        for (int h = 0; h < columns.Length;)
        {
            int shared = 1, adjacent = 1;
            while (h + shared < columns.Length && columns[h + shared] == columns[h]) shared++;
            while (h + adjacent < columns.Length && columns[h + adjacent] == columns[h] + adjacent * width) adjacent++;
            var run = shared >= adjacent ? new HeadRun(h, shared, columns[h], true) : new HeadRun(h, adjacent, columns[h], false);
            runs.Add(run);
            h += run.Count;
        }
        return runs;
    }

    /// <summary>
    /// Source <paramref name="index"/>'s gradient: each head's gradient of every operand read from it, added into the
    /// columns the head read (heads sharing a slice summed first). Written in place of a zero fill where the slices read
    /// do not overlap (Mamba-2's x, B and C), only the columns nothing read set to 0.
    /// </summary>
    private static Tensor Gathered(Tensor source, (Operand Operand, Tensor Gradient, int Width)[] operands, int index, int heads)
    {
        var (batch, time) = (source.shape[0], source.shape[1]);
        var parts = operands.Where(o => o.Operand.Source == index).SelectMany(o => Runs(o.Operand.Columns, o.Width).Select(run =>
            (Column: (long)run.Column, Width: run.Shared ? o.Width : (long)run.Count * o.Width,
             Gradient: run.Shared ? o.Gradient.view(batch, time, heads, o.Width).narrow(2, run.Head, run.Count).sum(2)
                                  : o.Gradient.narrow(2, (long)run.Head * o.Width, (long)run.Count * o.Width)))).OrderBy(p => p.Column).ToList();
        var apart = parts.Zip(parts.Skip(1)).All(pair => pair.First.Column + pair.First.Width <= pair.Second.Column);
        if (!apart)
        {
            var sum = zeros_like(source);
            foreach (var part in parts) sum.narrow(2, part.Column, part.Width).add_(part.Gradient, HeldScalars.One);
            return sum;
        }
        var into = empty_like(source);
        long covered = 0;
        foreach (var part in parts)
        {
            if (part.Column > covered) into.narrow(2, covered, part.Column - covered).zero_();
            into.narrow(2, part.Column, part.Width).copy_(part.Gradient);
            covered = part.Column + part.Width;
        }
        if (source.shape[2] > covered) into.narrow(2, covered, source.shape[2] - covered).zero_();
        return into;
    }

    /// <summary>q, k and v where the loop reads them: the three packed inputs, or read from the sources.</summary>
    private static (LoopOperand Q, LoopOperand K, LoopOperand V) Operands(Tensor?[] sources, Form form) =>
        form.Read is not { } reading
            ? (LoopOperand.Packed(sources[0]!, form.Heads, form.Key), LoopOperand.Packed(sources[1]!, form.Heads, form.Key),
               LoopOperand.Packed(sources[2]!, form.Heads, form.Value))
            : reading.Operands(sources);

    /// <summary>What the loop reads: the factors e^l without a gate, the log-decays l with one (it forms e^(l + m_(t-1) - m_t)).</summary>
    private static Tensor? Decay(Tensor? logDecay, Tensor? logGate) =>
        logDecay is null ? null : logGate is null ? logDecay.exp() : logDecay;

    private static GatedLinearAttentionLoop.Shape Shape(Tensor y, Tensor? decay, Form form) =>
        new((int)y.shape[0], (int)y.shape[1], form.Heads, form.Key, form.Value, decay is null ? 0 : (int)decay.shape[3]);

    private static GatedLinearAttentionLoop.Layout Layout(LoopOperand q, LoopOperand k, LoopOperand v) => new(q.Rows, k.Rows, v.Rows);

    private static unsafe void Forward<T>(LoopOperand q, LoopOperand k, LoopOperand v, Tensor? decay, Tensor? gate, Tensor y, Tensor? earlier, Form form)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(q.Anchor, k.Anchor, v.Anchor, decay, gate, y, earlier);
        GatedLinearAttentionLoop.Run(q.Pointer<T>(), k.Pointer<T>(), v.Pointer<T>(), RawStorage.PointerOrNull<T>(decay),
            RawStorage.PointerOrNull<T>(gate), form.Normalised, RawStorage.Pointer<T>(y), Shape(y, decay, form), RawStorage.PointerOrNull<T>(earlier),
            Layout(q, k, v));
    }

    private static unsafe void Backward<T>(LoopOperand q, LoopOperand k, LoopOperand v, Tensor? decay, Tensor? gate, Tensor y, Tensor? earlier, Tensor dy,
        Tensor dq, Tensor dk, Tensor dv, Tensor? terms, Tensor? headTerms, Tensor? dGate, Form form) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(q.Anchor, k.Anchor, v.Anchor, decay, gate, y, earlier, dy, dq, dk, dv, terms, headTerms, dGate);
        GatedLinearAttentionReverse.Run(q.Pointer<T>(), k.Pointer<T>(), v.Pointer<T>(), RawStorage.PointerOrNull<T>(decay),
            RawStorage.PointerOrNull<T>(gate), form.Normalised, RawStorage.Pointer<T>(y), RawStorage.PointerOrNull<T>(earlier), RawStorage.Pointer<T>(dy),
            RawStorage.Pointer<T>(dq), RawStorage.Pointer<T>(dk), RawStorage.Pointer<T>(dv), RawStorage.PointerOrNull<T>(terms),
            RawStorage.PointerOrNull<T>(headTerms), Shape(y, decay, form), Layout(q, k, v), RawStorage.PointerOrNull<T>(dGate));
    }
}
