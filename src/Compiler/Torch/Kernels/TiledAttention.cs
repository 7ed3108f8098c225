using System.Numerics;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// Softmax attention in tiles, never forming the T x T score matrix (the online softmax of FlashAttention). For query t,
///   y_t = sum_s p_ts v_s,   p_ts = e^(a_ts - L_t),   a_ts = scale q_t . k_s,   L_t = log sum_s e^(a_ts),
/// over s &lt;= t (causal) or every s. Each query block visits the key blocks it sees and keeps per row a running
/// max m, sum l and unnormalised output u:
///   m' = max(m, max_s a_ts),   l' = e^(m - m') l + sum_s e^(a_ts - m'),   u' = e^(m - m') u + sum_s e^(a_ts - m') v_s,
/// ending with y = u / l and L = m + log l. The backward pass recomputes each block's p from L:
///   D_t = dy_t . y_t,   da_ts = p_ts (dy_t . v_s - D_t),
///   dq_t = scale sum_s da_ts k_s,   dk_s = scale sum_t da_ts q_t,   dv_s = sum_t p_ts dy_t.
/// With causal no pass ever reads a later step, so a NaN or infinity at step t leaves every output before t as it
/// was; and a row with dy_t = 0 contributes nothing to any gradient (its terms are 0 in exact arithmetic) and is
/// left out, so such a value in a row no loss reads cannot reach earlier steps' gradients through 0 * NaN.
/// Memory beside q, k, v, y and L: O(T (key + value)) for blocked copies and O(block (key + value)) per thread;
/// the loops are <see cref="TiledSoftmaxLoops"/>. CPU tensors, float32 or float64.
/// q, k: [batch, heads, time, key]; v: [batch, heads, time, value]; returns [batch, heads, time, value].
/// </summary>
internal static class TiledAttention
{
    /// <summary>
    /// Steps per block (query rows and keys). At T = 4096, width 64, float32 on 2 cores, 128 and 256 ran alike (within
    /// the noise of a shared machine) and ahead of 64, all about 2.5 times faster than the masked T x T form;
    /// 128 keeps the per-thread buffers smaller.
    /// </summary>
    public const int DefaultBlock = 128;

    /// <summary>softmax_s(scale q_t . k_s) v_s over s &lt;= t (causal) or all s, differentiable in q, k and v.</summary>
    public static Tensor Softmax(Tensor q, Tensor k, Tensor v, bool causal, double scale, int block = DefaultBlock)
    {
        if (q.device.type != DeviceType.CPU) throw new NotSupportedException($"tiled attention runs on the CPU, not on {q.device}");
        long batch = q.shape[0], heads = q.shape[1], time = q.shape[2];
        Tensor Rows(Tensor t) => t.reshape(batch * heads, time, t.shape[3]).contiguous();
        var (queries, keys, values) = (Rows(q), Rows(k), Rows(v));
        Tensor output;
        if (GradientGate.Records(queries, keys, values))
            output = TiledSoftmaxFunction.apply(queries, keys, values, causal, scale, block);
        else
        {
            (output, var logSumExp) = Forward(queries, keys, values, causal, scale, block);
            logSumExp.Dispose();
        }
        return output.view(batch, heads, time, v.shape[3]);
    }

    /// <summary>q, k: [rows, time, key]; v: [rows, time, value], contiguous. Returns y [rows, time, value] and L [rows, time].</summary>
    internal static (Tensor Output, Tensor LogSumExp) Forward(Tensor q, Tensor k, Tensor v, bool causal, double scale, int block)
    {
        using var noGrad = no_grad();
        var shape = Shape(q, v, causal, block);
        var (output, logSumExp) = (empty(q.shape[0], q.shape[1], v.shape[2], dtype: q.dtype), empty(q.shape[0], q.shape[1], dtype: q.dtype));
        using var scope = NewDisposeScope();
        var (keys, values) = (Blocked(k, block), Blocked(v, block));
        using var alive = RawStorage.KeepAlive(q, keys, values, output, logSumExp);
        if (q.dtype == ScalarType.Float32) Forward<float>(q, keys, values, (float)scale, output, logSumExp, shape);
        else Forward<double>(q, keys, values, scale, output, logSumExp, shape);
        return (output, logSumExp);
    }

    /// <summary>dq, dk, dv from the saved q, k, v, y, L and the output gradient dy (all [rows, time, width]).</summary>
    internal static (Tensor Query, Tensor Key, Tensor Value) Backward(Tensor q, Tensor k, Tensor v, Tensor output, Tensor logSumExp,
        Tensor gradient, bool causal, double scale, int block)
    {
        using var noGrad = no_grad();
        var shape = Shape(q, v, causal, block);
        var (dq, dk, dv) = (empty_like(q), empty_like(k), empty_like(v));
        using var scope = NewDisposeScope();
        var dy = gradient.contiguous();
        // rows no loss reads enter the key gradients as q' = 0, L = 0, D = 0 (selected, not multiplied)
        var silent = dy.eq(HeldScalars.Zero).all(-1);
        var projected = (dy * output).sum([-1L]).masked_fill_(silent, HeldScalars.Zero);
        var settled = logSumExp.masked_fill(silent, HeldScalars.Zero);
        var queries = Blocked(q.Times(scale).masked_fill_(silent.unsqueeze(-1), HeldScalars.Zero), block);
        var (keys, values, gradients) = (Blocked(k, block), Blocked(v, block), Blocked(dy, block));
        using var alive = RawStorage.KeepAlive(q, k, v, dy, projected, settled, queries, keys, values, gradients, dq, dk, dv);
        if (q.dtype == ScalarType.Float32) Backward<float>(q, k, v, dy, projected, settled, queries, keys, values, gradients, (float)scale, dq, dk, dv, shape);
        else Backward<double>(q, k, v, dy, projected, settled, queries, keys, values, gradients, scale, dq, dk, dv, shape);
        return (dq, dk, dv);
    }

    private static unsafe void Forward<T>(Tensor q, Tensor keys, Tensor values, T scale, Tensor output, Tensor logSumExp,
        TiledSoftmaxLoops.Shape shape) where T : unmanaged, IFloatingPointIeee754<T> =>
        TiledSoftmaxLoops.Forward(P<T>(q), P<T>(keys), P<T>(values), scale, P<T>(output), P<T>(logSumExp), shape);

    private static unsafe void Backward<T>(Tensor q, Tensor k, Tensor v, Tensor dy, Tensor projected, Tensor logSumExp, Tensor queries,
        Tensor keys, Tensor values, Tensor gradients, T scale, Tensor dq, Tensor dk, Tensor dv, TiledSoftmaxLoops.Shape shape)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        TiledSoftmaxLoops.QueryGradient(P<T>(q), P<T>(dy), P<T>(keys), P<T>(values), P<T>(logSumExp), P<T>(projected), scale, P<T>(dq), shape);
        TiledSoftmaxLoops.KeyValueGradient(P<T>(k), P<T>(v), P<T>(queries), P<T>(gradients), P<T>(logSumExp), P<T>(projected), P<T>(dk), P<T>(dv), shape);
    }

    private static unsafe T* P<T>(Tensor t) where T : unmanaged => RawStorage.Pointer<T>(t);

    private static TiledSoftmaxLoops.Shape Shape(Tensor q, Tensor v, bool causal, int block) =>
        new((int)q.shape[0], (int)q.shape[1], (int)q.shape[2], (int)v.shape[2], block, causal);

    /// <summary>[rows, time, width] -> [rows, blocks, width, block], zero padded: each block's steps contiguous per feature.</summary>
    private static Tensor Blocked(Tensor x, int block)
    {
        long rows = x.shape[0], time = x.shape[1], width = x.shape[2], blocks = (time + block - 1) / block;
        var padded = blocks * block == time ? x : nn.functional.pad(x, [0, 0, 0, blocks * block - time]);
        return padded.view(rows, blocks, block, width).transpose(2, 3).contiguous();
    }
}

/// <summary>
/// <see cref="TiledAttention"/> as one autograd operation: the forward pass saves q, k, v, y and L ([rows, time])
/// and nothing of size T x T; the backward pass recomputes the blocks.
/// </summary>
internal sealed class TiledSoftmaxFunction : SingleTensorFunction<TiledSoftmaxFunction>
{
    public override string Name => "TiledSoftmaxAttention";

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (q, k, v, causal, scale, block) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (bool)vars[3], (double)vars[4], (int)vars[5]);
        var (output, logSumExp) = TiledAttention.Forward(q, k, v, causal, scale, block);
        ctx.save_for_backward([q, k, v, output, logSumExp]);
        ctx.save_data("causal", causal);
        ctx.save_data("scale", scale);
        ctx.save_data("block", block);
        return output;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () => ReversePass(ctx, grad));

    private static List<Tensor> ReversePass(AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        var (dq, dk, dv) = TiledAttention.Backward(saved[0], saved[1], saved[2], saved[3], saved[4], grad,
            (bool)ctx.get_data("causal"), (double)ctx.get_data("scale"), (int)ctx.get_data("block"));
        return [dq, dk, dv, null!, null!, null!];
    }
}
