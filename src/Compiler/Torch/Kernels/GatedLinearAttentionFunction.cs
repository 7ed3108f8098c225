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
/// </summary>
internal sealed class GatedLinearAttentionFunction : SingleTensorFunction<GatedLinearAttentionFunction>
{
    /// <summary>The sizes of one call, whether the output is divided by the normaliser, and whether the log-decays take a
    /// gradient (set by <see cref="Run"/>).</summary>
    public sealed record Form(int Heads, int Key, int Value, bool Normalised, bool DecayGradient = false);

    public override string Name => "GatedLinearAttention";

    public static Tensor Run(Tensor q, Tensor k, Tensor v, Tensor? logDecay, Tensor? logGate, Form form) =>
        apply(GradientGate.Through(q.contiguous()), GradientGate.Through(k.contiguous()), GradientGate.Through(v.contiguous()),
            logDecay?.contiguous()!, logGate?.contiguous()!, form with { DecayGradient = logDecay is { requires_grad: true } });

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (q, k, v, logDecay, logGate, form) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor, vars[4] as Tensor, (Form)vars[5]);
        var y = LargeTensors.Empty([q.shape[0], q.shape[1], form.Heads * form.Value], q.dtype);
        // normalised, each step's output over the earlier steps alone: the reverse pass forms the step's own part from it
        var earlier = form.Normalised ? LargeTensors.EmptyLike(y) : null;
        var decay = Decay(logDecay, logGate);
        if (q.dtype == ScalarType.Float32) Forward<float>(q, k, v, decay, logGate, y, earlier, form);
        else Forward<double>(q, k, v, decay, logGate, y, earlier, form);
        ctx.save_for_backward([q, k, v, decay!, logGate!, y, earlier!]);
        ctx.save_data("form", form);
        return y;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () => ReversePass(ctx, grad));

    private static List<Tensor> ReversePass(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        Tensor? Optional(Tensor t) => t is { IsInvalid: false } ? t : null;
        var (q, k, v, decay, logGate, y, earlier) = (saved[0], saved[1], saved[2], Optional(saved[3]), Optional(saved[4]), saved[5], Optional(saved[6]));
        var form = (Form)ctx.get_data("form");
        var dy = grad.contiguous();
        var (dq, dk, dv) = (LargeTensors.EmptyLike(q), LargeTensors.EmptyLike(k), LargeTensors.EmptyLike(v));
        long batch = q.shape[0], time = q.shape[1];
        // the log-decays' gradient, formed by the reverse pass per key channel or per head
        var (perKey, perHead) = (decay is not null && form.DecayGradient && decay.shape[3] > 1, decay is not null && form.DecayGradient && decay.shape[3] == 1);
        var terms = perKey ? LargeTensors.EmptyLike(q) : null;
        var headTerms = perHead ? LargeTensors.Empty([batch, time, form.Heads, 1], q.dtype) : null;
        if (q.dtype == ScalarType.Float32) Backward<float>(q, k, v, decay, logGate, y, earlier, dy, dq, dk, dv, terms, headTerms, form);
        else Backward<double>(q, k, v, decay, logGate, y, earlier, dy, dq, dk, dv, terms, headTerms, form);
        Tensor PerKey(Tensor t) => t.view(batch, time, form.Heads, form.Key);
        var dLogDecay = terms is not null ? PerKey(terms) : headTerms;
        var dLogGate = logGate is null ? null : (PerKey(k) * PerKey(dk)).sum(-1);
        return [dq, dk, dv, dLogDecay!, dLogGate!, null!];
    }

    /// <summary>What the loop reads: the factors e^l without a gate, the log-decays l with one (it forms e^(l + m_(t-1) - m_t)).</summary>
    private static Tensor? Decay(Tensor? logDecay, Tensor? logGate) =>
        logDecay is null ? null : logGate is null ? logDecay.exp() : logDecay;

    private static GatedLinearAttentionLoop.Shape Shape(Tensor q, Tensor? decay, Form form) =>
        new((int)q.shape[0], (int)q.shape[1], form.Heads, form.Key, form.Value, decay is null ? 0 : (int)decay.shape[3]);

    private static unsafe void Forward<T>(Tensor q, Tensor k, Tensor v, Tensor? decay, Tensor? gate, Tensor y, Tensor? earlier, Form form)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(q, k, v, decay, gate, y, earlier);
        GatedLinearAttentionLoop.Run(RawStorage.Pointer<T>(q), RawStorage.Pointer<T>(k), RawStorage.Pointer<T>(v), RawStorage.PointerOrNull<T>(decay),
            RawStorage.PointerOrNull<T>(gate), form.Normalised, RawStorage.Pointer<T>(y), Shape(q, decay, form), RawStorage.PointerOrNull<T>(earlier));
    }

    private static unsafe void Backward<T>(Tensor q, Tensor k, Tensor v, Tensor? decay, Tensor? gate, Tensor y, Tensor? earlier, Tensor dy, Tensor dq,
        Tensor dk, Tensor dv, Tensor? terms, Tensor? headTerms, Form form) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var alive = RawStorage.KeepAlive(q, k, v, decay, gate, y, earlier, dy, dq, dk, dv, terms, headTerms);
        GatedLinearAttentionReverse.Run(RawStorage.Pointer<T>(q), RawStorage.Pointer<T>(k), RawStorage.Pointer<T>(v), RawStorage.PointerOrNull<T>(decay),
            RawStorage.PointerOrNull<T>(gate), form.Normalised, RawStorage.Pointer<T>(y), RawStorage.PointerOrNull<T>(earlier), RawStorage.Pointer<T>(dy), RawStorage.Pointer<T>(dq),
            RawStorage.Pointer<T>(dk), RawStorage.Pointer<T>(dv), RawStorage.PointerOrNull<T>(terms), RawStorage.PointerOrNull<T>(headTerms),
            Shape(q, decay, form));
    }
}
