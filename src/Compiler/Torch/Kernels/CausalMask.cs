using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Duality.Kernels;

/// <summary>
/// The causal mask applied by selection, never by multiplication. A score or value at a later step s &gt; t
/// may be NaN or infinite, and 0 * NaN = NaN: multiplying by a 0/1 mask, or a matrix product whose masked
/// weights are 0, would carry a non-finite value at step s back to every earlier step. Here a masked entry
/// is replaced (<see cref="Fill"/>) or never multiplied (<see cref="Product"/>).
/// Scores: [..., time, time] (query t, key s); values: [..., time, width].
/// </summary>
internal static class CausalMask
{
    /// <summary>scores[t, s] for s &lt;= t, <paramref name="value"/> for s &gt; t (-inf before a softmax, 0 for linear forms).</summary>
    public static Tensor Fill(Tensor scores, double value) => scores.masked_fill(Future(scores.shape[^1], scores.device), HeldScalars.Of(value));

    /// <summary>The later steps: true where s &gt; t, [time, time].</summary>
    public static Tensor Future(long time, Device device) => ones(time, time, dtype: ScalarType.Bool, device: device).triu(1);

    /// <summary>
    /// y_t = sum_{s &lt;= t} w[t, s] x_s for w [..., n, n] with w[t, s] = 0 for s &gt; t (as <see cref="Fill"/> leaves it)
    /// and x [..., n, width], never forming 0 * x_s with a non-finite x_s. One matrix product when x is finite;
    /// otherwise, with w split into halves [A 0; C D] and x into (x1, x2),
    ///   y = (A x1, C x1 + D x2),
    /// recursively on the diagonal blocks A and D (the full block C multiplies only earlier steps), down to single
    /// steps. With gradients one autograd operation whose reverse pass keeps the same rule for the output's gradient dy:
    /// dx_s = sum_(t &gt;= s) w[t, s] dy_t never forms 0 * dy_t with a non-finite dy_t at t &lt; s (<see cref="Transposed"/>),
    /// and dw = dy x^T is 0 past the diagonal by selection.
    /// </summary>
    public static Tensor Product(Tensor weights, Tensor x) =>
        GradientGate.Records(weights, x) ? CausalProductFunction.apply(GradientGate.Through(weights), GradientGate.Through(x)) : Forward(weights, x);

    internal static Tensor Forward(Tensor weights, Tensor x)
    {
        if (Finite(x)) return weights.matmul(x);
        long n = x.shape[^2], half = n / 2;
        if (n == 1) return weights * x;
        var (before, after) = (x.narrow(-2, 0, half), x.narrow(-2, half, n - half));
        var upper = Forward(Block(weights, 0, 0, half, half), before);
        var lower = Block(weights, half, 0, n - half, half).matmul(before).Plus(Forward(Block(weights, half, half, n - half, n - half), after));
        return cat([upper, lower], -2);
    }

    /// <summary>
    /// dx_s = sum_(t &gt;= s) w[t, s] dy_t, never forming 0 * dy_t for t &lt; s: one product when dy is finite; otherwise, with
    /// w = [A 0; C D] and dy = (dy1, dy2), dx = (A^T dy1 + C^T dy2, D^T dy2), recursively on A and D.
    /// </summary>
    internal static Tensor Transposed(Tensor weights, Tensor dy)
    {
        if (Finite(dy)) return weights.transpose(-2, -1).matmul(dy);
        long n = dy.shape[^2], half = n / 2;
        if (n == 1) return weights * dy;
        var (before, after) = (dy.narrow(-2, 0, half), dy.narrow(-2, half, n - half));
        var upper = Transposed(Block(weights, 0, 0, half, half), before)
            .Plus(Block(weights, half, 0, n - half, half).transpose(-2, -1).matmul(after));
        var lower = Transposed(Block(weights, half, half, n - half, n - half), after);
        return cat([upper, lower], -2);
    }

    private static bool Finite(Tensor x) => x.isfinite().all().item<bool>();

    private static Tensor Block(Tensor w, long row, long column, long rows, long columns) =>
        w.narrow(-2, row, rows).narrow(-1, column, columns);
}

/// <summary><see cref="CausalMask.Product"/> as one autograd operation: weights [..., n, n], x [..., n, width].</summary>
internal sealed class CausalProductFunction : SingleTensorFunction<CausalProductFunction>
{
    public override string Name => "CausalProduct";

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (weights, x) = ((Tensor)vars[0], (Tensor)vars[1]);
        ctx.save_for_backward([weights, x]);
        return CausalMask.Forward(weights, x);
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => BackwardScope.Run(grad, () =>
    {
        var saved = ctx.get_saved_variables();
        var (weights, x) = (saved[0], saved[1]);
        // broadcast batch dimensions (weights shared across a batch) summed back to each operand's shape
        var dWeights = CausalMask.Fill(grad.matmul(x.transpose(-2, -1)), 0);
        var dx = CausalMask.Transposed(weights, grad);
        return [SumTo(dWeights, weights), SumTo(dx, x)];
    });

    private static Tensor SumTo(Tensor gradient, Tensor operand)
    {
        while (gradient.dim() > operand.dim()) gradient = gradient.sum(0);
        for (int d = 0; d < operand.dim() - 2; d++)
            if (operand.shape[d] == 1 && gradient.shape[d] != 1) gradient = gradient.sum(d, keepdim: true);
        return gradient;
    }
}
