using static TorchSharp.torch;

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
    /// steps. Differentiable: autograd follows the same pieces.
    /// </summary>
    public static Tensor Product(Tensor weights, Tensor x)
    {
        if (Finite(x)) return weights.matmul(x);
        long n = x.shape[^2], half = n / 2;
        if (n == 1) return weights * x;
        var (before, after) = (x.narrow(-2, 0, half), x.narrow(-2, half, n - half));
        var upper = Product(Block(weights, 0, 0, half, half), before);
        var lower = Block(weights, half, 0, n - half, half).matmul(before).Plus(Product(Block(weights, half, half, n - half, n - half), after));
        return cat([upper, lower], -2);
    }

    private static bool Finite(Tensor x) => x.isfinite().all().item<bool>();

    private static Tensor Block(Tensor w, long row, long column, long rows, long columns) =>
        w.narrow(-2, row, rows).narrow(-1, column, columns);
}
