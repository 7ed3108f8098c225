using System.Numerics;
using System.Runtime.CompilerServices;
using System.Threading.Tasks;
using static Duality.Kernels.VectorRows;

namespace Duality.Kernels;

/// <summary>
/// The loops of <see cref="TiledAttention"/>, per row r (batch x head) and block of B steps, with
/// a_ts = q'_t . k_s (q' = scale q, the same fused multiply-adds in every pass, so each pass recomputes
/// the forward's scores bit for bit):
///   forward, per query block:   m, l, u per query row over key blocks (online softmax); y = u / l, L = m + log l
///   query gradient, per block:  dq_t = scale sum_s da_ts k_s,  da_ts = p_ts (dy_t . v_s - D_t),  p_ts = e^(a_ts - L_t)
///   key gradient, per block:    dk_s = sum_t da_ts q'_t,  dv_s = sum_t p_ts dy_t
/// With causal, row t reads keys s &lt;= t only and key s rows t &gt;= s only: a later step is never loaded, so a
/// NaN or infinity there cannot reach an earlier one. Vectorised along keys (forward, query gradient) or along
/// rows (key gradient), which therefore come blocked and transposed: [rows, blocks, width, B], zero padded.
/// Row-major inputs are [rows, time, width]; L and D are [rows, time]. Parallel over (row, block) pairs.
/// </summary>
internal static unsafe class TiledSoftmaxLoops
{
    /// <summary>
    /// Work (rows x time^2 x (key + value), the masked form's count) from which two or more (row, block) pairs run in
    /// parallel: below it, starting the tasks costs more than the loops save.
    /// </summary>
    public const long ParallelWork = 1 << 20;

    public readonly record struct Shape(int Rows, int Time, int Key, int Value, int Block, bool Causal)
    {
        public int Blocks => (Time + Block - 1) / Block;

        /// <summary>Steps [start, end) of block b.</summary>
        public (int Start, int End) Span(int b) => (b * Block, Math.Min((b + 1) * Block, Time));

        /// <summary>Offset of (row, block) in a blocked transposed tensor of this width.</summary>
        public long Tile(int row, int block, int width) => ((long)row * Blocks + block) * width * Block;

        /// <summary>Offset of (row, step) in a row-major tensor of this width.</summary>
        public long At(int row, int step, int width) => ((long)row * Time + step) * width;
    }

    /// <summary>y [rows, time, value] and L [rows, time] from q [rows, time, key] and blocked transposed k, v.</summary>
    public static void Forward<T>(T* q, T* keys, T* values, T scale, T* y, T* logSumExp, Shape shape)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        ForEachBlock(shape, (row, block) => ForwardBlock(q, keys, values, scale, y, logSumExp, shape, row, block));

    /// <summary>dq [rows, time, key]; rows whose dy is 0 get dq = 0 and are not read further.</summary>
    public static void QueryGradient<T>(T* q, T* dy, T* keys, T* values, T* logSumExp, T* projected, T scale, T* dq, Shape shape)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        ForEachBlock(shape, (row, block) => QueryGradientBlock(q, dy, keys, values, logSumExp, projected, scale, dq, shape, row, block));

    /// <summary>
    /// dk, dv from k, v (row-major) and blocked transposed q' and dy. A row whose dy is 0 must arrive with q' = 0,
    /// L = 0 and D = 0, so that its p_ts dy_t and da_ts are exactly 0 whatever its other values were.
    /// </summary>
    public static void KeyValueGradient<T>(T* k, T* v, T* queries, T* dy, T* logSumExp, T* projected, T* dk, T* dv, Shape shape)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        ForEachBlock(shape, (row, block) => KeyValueGradientBlock(k, v, queries, dy, logSumExp, projected, dk, dv, shape, row, block));

    private static void ForEachBlock(Shape shape, Action<int, int> run)
    {
        int blocks = shape.Blocks, pairs = shape.Rows * blocks;
        if (pairs > 1 && (long)shape.Time * shape.Time * (shape.Key + shape.Value) * shape.Rows >= ParallelWork)
            KernelTeam.For(pairs, p => run(p / blocks, p % blocks));
        else
            for (int p = 0; p < pairs; p++) run(p / blocks, p % blocks);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardBlock<T>(T* q, T* keys, T* values, T scale, T* y, T* logSumExp, Shape s, int row, int block)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (start, end) = s.Span(block);
        int rows = end - start, width = s.Value;
        var (scaledBuffer, unnormalisedBuffer, scoreBuffer) = (new T[rows * s.Key], new T[rows * width], new T[s.Block]);
        var (max, sum) = (new T[rows], new T[rows]);
        Array.Fill(max, T.NegativeInfinity);
        fixed (T* scaled = scaledBuffer, unnormalised = unnormalisedBuffer, p = scoreBuffer)
        {
            Scale(q + s.At(row, start, s.Key), scale, scaled, rows * s.Key);
            for (int keyBlock = 0; keyBlock < (s.Causal ? block + 1 : s.Blocks); keyBlock++)
            {
                T* kt = keys + s.Tile(row, keyBlock, s.Key), vt = values + s.Tile(row, keyBlock, width);
                for (int i = 0; i < rows; i++)
                {
                    int n = Visible(s, start + i, keyBlock);
                    var newMax = T.Max(max[i], Scores(scaled + i * s.Key, kt, s.Key, s.Block, n, p));
                    // a row without a finite score so far shifts by 0: e^(-inf - 0) = 0 where e^(-inf + inf) would be NaN
                    var shift = T.IsNegativeInfinity(newMax) ? T.Zero : newMax;
                    var rescale = newMax == max[i] ? T.One : T.Exp(max[i] - shift);
                    sum[i] = rescale * sum[i] + Exponentials(p, n, shift);
                    T* u = unnormalised + i * width;
                    for (int c = 0; c < width; c++) u[c] = rescale * u[c] + Dot(p, vt + c * s.Block, n);
                    max[i] = newMax;
                }
            }
            for (int i = 0; i < rows; i++)
            {
                T* yt = y + s.At(row, start + i, width);
                for (int c = 0; c < width; c++) yt[c] = unnormalised[i * width + c] / sum[i];
                logSumExp[(long)row * s.Time + start + i] = max[i] + T.Log(sum[i]);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QueryGradientBlock<T>(T* q, T* dy, T* keys, T* values, T* logSumExp, T* projected, T scale, T* dq,
        Shape s, int row, int block) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (start, end) = s.Span(block);
        int rows = end - start, width = s.Key;
        var (scaledBuffer, gradientBuffer, scoreBuffer) = (new T[rows * width], new T[rows * width], new T[s.Block]);
        var silent = new bool[rows];
        for (int i = 0; i < rows; i++) silent[i] = IsZero(dy + s.At(row, start + i, s.Value), s.Value);
        fixed (T* scaled = scaledBuffer, gradient = gradientBuffer, ds = scoreBuffer)
        {
            Scale(q + s.At(row, start, width), scale, scaled, rows * width);
            for (int keyBlock = 0; keyBlock < (s.Causal ? block + 1 : s.Blocks); keyBlock++)
            {
                T* kt = keys + s.Tile(row, keyBlock, width), vt = values + s.Tile(row, keyBlock, s.Value);
                for (int i = 0; i < rows; i++)
                {
                    if (silent[i]) continue;
                    int n = Visible(s, start + i, keyBlock);
                    long step = (long)row * s.Time + start + i;
                    Scores(scaled + i * width, kt, width, s.Block, n, ds);
                    ScoreGradients(ds, dy + step * s.Value, vt, s.Value, s.Block, n, logSumExp[step], projected[step]);
                    T* g = gradient + i * width;
                    for (int c = 0; c < width; c++) g[c] += Dot(ds, kt + c * s.Block, n);
                }
            }
            for (int i = 0; i < rows; i++)
            {
                T* dqt = dq + s.At(row, start + i, width);
                for (int c = 0; c < width; c++) dqt[c] = scale * gradient[i * width + c];
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KeyValueGradientBlock<T>(T* k, T* v, T* queries, T* dy, T* logSumExp, T* projected, T* dk, T* dv,
        Shape s, int row, int block) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (start, end) = s.Span(block);
        int keyCount = end - start;
        var (keyBuffer, valueBuffer, weightBuffer, scoreBuffer) = (new T[keyCount * s.Key], new T[keyCount * s.Value], new T[s.Block], new T[s.Block]);
        fixed (T* keyGradient = keyBuffer, valueGradient = valueBuffer, p = weightBuffer, ds = scoreBuffer)
        {
            for (int queryBlock = s.Causal ? block : 0; queryBlock < s.Blocks; queryBlock++)
            {
                var (queryStart, queryEnd) = s.Span(queryBlock);
                T* qt = queries + s.Tile(row, queryBlock, s.Key), gt = dy + s.Tile(row, queryBlock, s.Value);
                long steps = (long)row * s.Time + queryStart;
                for (int j = 0; j < keyCount; j++)
                {
                    // causal: rows t >= s of this block, from offset first
                    int first = s.Causal ? Math.Max(start + j - queryStart, 0) : 0, n = queryEnd - queryStart - first;
                    if (n <= 0) continue;
                    Scores(k + s.At(row, start + j, s.Key), qt + first, s.Key, s.Block, n, p);
                    WeightsAndScoreGradients(p, ds, v + s.At(row, start + j, s.Value), gt + first, s.Value, s.Block, n,
                        logSumExp + steps + first, projected + steps + first);
                    T* gk = keyGradient + j * s.Key, gv = valueGradient + j * s.Value;
                    for (int c = 0; c < s.Value; c++) gv[c] += Dot(p, gt + first + c * s.Block, n);
                    for (int c = 0; c < s.Key; c++) gk[c] += Dot(ds, qt + first + c * s.Block, n);
                }
            }
            new Span<T>(keyGradient, keyBuffer.Length).CopyTo(new Span<T>(dk + s.At(row, start, s.Key), keyBuffer.Length));
            new Span<T>(valueGradient, valueBuffer.Length).CopyTo(new Span<T>(dv + s.At(row, start, s.Value), valueBuffer.Length));
        }
    }

    /// <summary>How many keys of a key block step t sees: all of them, or with causal those up to t.</summary>
    private static int Visible(Shape s, int t, int keyBlock)
    {
        var (start, end) = s.Span(keyBlock);
        return (s.Causal ? Math.Min(end, t + 1) : end) - start;
    }

    /// <summary>a_j = sum_c x_c w[c, j] for j &lt; n (w with row stride <paramref name="stride"/>), into a; returns max_j a_j.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Scores<T>(T* x, T* w, int width, int stride, int n, T* a) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int j = 0, lanes = Vector<T>.Count;
        var vectorMax = new Vector<T>(T.NegativeInfinity);
        for (; j <= n - lanes; j += lanes)
        {
            var sum = Vector<T>.Zero;
            for (int c = 0; c < width; c++) sum = VectorFused.MultiplyAdd(new Vector<T>(x[c]), Vector.Load(w + c * stride + j), sum);
            Vector.Store(sum, a + j);
            vectorMax = Vector.Max(vectorMax, sum);
        }
        var max = T.NegativeInfinity;
        for (int lane = 0; lane < lanes; lane++) max = T.Max(max, vectorMax[lane]);
        for (; j < n; j++)
        {
            var sum = T.Zero;
            for (int c = 0; c < width; c++) sum = T.FusedMultiplyAdd(x[c], w[c * stride + j], sum);
            a[j] = sum;
            max = T.Max(max, sum);
        }
        return max;
    }

    /// <summary>a_j = e^(a_j - shift) for j &lt; n; returns their sum.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Exponentials<T>(T* a, int n, T shift) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int j = 0, lanes = Vector<T>.Count;
        var (shifts, sums) = (new Vector<T>(shift), Vector<T>.Zero);
        for (; j <= n - lanes; j += lanes)
        {
            var e = VectorExp.Exp(Vector.Load(a + j) - shifts);
            Vector.Store(e, a + j);
            sums += e;
        }
        var total = Vector.Sum(sums);
        for (; j < n; j++) total += a[j] = T.Exp(a[j] - shift);
        return total;
    }

    /// <summary>For one query row: a_j (scores in) -> da_j = p_j (dy . v_j - D), p_j = e^(a_j - L); v transposed [value, stride].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScoreGradients<T>(T* a, T* dy, T* v, int width, int stride, int n, T logSumExp, T projected)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int j = 0, lanes = Vector<T>.Count;
        var (l, d) = (new Vector<T>(logSumExp), new Vector<T>(projected));
        for (; j <= n - lanes; j += lanes)
        {
            var dp = Vector<T>.Zero;
            for (int c = 0; c < width; c++) dp = VectorFused.MultiplyAdd(new Vector<T>(dy[c]), Vector.Load(v + c * stride + j), dp);
            Vector.Store(VectorExp.Exp(Vector.Load(a + j) - l) * (dp - d), a + j);
        }
        for (; j < n; j++)
        {
            var dp = T.Zero;
            for (int c = 0; c < width; c++) dp = T.FusedMultiplyAdd(dy[c], v[c * stride + j], dp);
            a[j] = T.Exp(a[j] - logSumExp) * (dp - projected);
        }
    }

    /// <summary>
    /// For one key: p_j = e^(a_j - L_j) (scores a in p) and da_j = p_j (v . dy_j - D_j) over rows j &lt; n;
    /// dy transposed [value, stride].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WeightsAndScoreGradients<T>(T* p, T* ds, T* v, T* dy, int width, int stride, int n, T* logSumExp, T* projected)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int j = 0, lanes = Vector<T>.Count;
        for (; j <= n - lanes; j += lanes)
        {
            var dp = Vector<T>.Zero;
            for (int c = 0; c < width; c++) dp = VectorFused.MultiplyAdd(new Vector<T>(v[c]), Vector.Load(dy + c * stride + j), dp);
            var weights = VectorExp.Exp(Vector.Load(p + j) - Vector.Load(logSumExp + j));
            Vector.Store(weights, p + j);
            Vector.Store(weights * (dp - Vector.Load(projected + j)), ds + j);
        }
        for (; j < n; j++)
        {
            var dp = T.Zero;
            for (int c = 0; c < width; c++) dp = T.FusedMultiplyAdd(v[c], dy[c * stride + j], dp);
            p[j] = T.Exp(p[j] - logSumExp[j]);
            ds[j] = p[j] * (dp - projected[j]);
        }
    }

    private static bool IsZero<T>(T* x, int count) where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < count; i++) if (x[i] != T.Zero) return false;
        return true;
    }
}
