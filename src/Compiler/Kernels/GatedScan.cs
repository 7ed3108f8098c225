using System.Numerics;
using System.Runtime.CompilerServices;
using Duality.Ir;

namespace Duality.Kernels;

/// <summary>
/// A gate feeding a real diagonal recurrence, fused: h_t = lambda * h_{t-1} + value_t * f(gate_t), never
/// materialising f(gate) or the product. value, gate, h: [B, T, N] contiguous; lambda: [N]; h0: [N] or null.
/// Work is split into (batch row, block of channels) pieces run in parallel; each keeps its block of the
/// state in cache while it walks through time.
/// </summary>
internal static unsafe class GatedScan
{
    private const int Block = 256;

    public static bool Supports(ActivationKind kind) =>
        kind is ActivationKind.Identity or ActivationKind.Sigmoid or ActivationKind.Tanh or ActivationKind.SiLU or ActivationKind.ReLU;

    public readonly record struct Shape(int Batch, int Time, int Width);

    public static void Run<T>(T* value, T* gate, T* lambda, T* h0, T* h, ActivationKind kind, Shape shape)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int blocks = (shape.Width + Block - 1) / Block, pieces = shape.Batch * blocks;
        System.Threading.Tasks.Parallel.For(0, pieces, piece =>
        {
            int start = piece % blocks * Block;
            RunPiece(value, gate, lambda, h0, h, kind, shape, piece / blocks, start, Math.Min(Block, shape.Width - start));
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunPiece<T>(T* value, T* gate, T* lambda, T* h0, T* h, ActivationKind kind, Shape shape, int b, int start, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var state = stackalloc T[width];
        for (int i = 0; i < width; i++) state[i] = h0 is null ? T.Zero : h0[start + i];
        T* l = lambda + start;
        for (int t = 0; t < shape.Time; t++)
        {
            long offset = ((long)b * shape.Time + t) * shape.Width + start;
            T* v = value + offset, g = gate + offset, y = h + offset;
            int i = 0;
            for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
            {
                var next = Vector.Load(l + i) * Vector.Load(state + i) + Vector.Load(v + i) * Activate(kind, Vector.Load(g + i));
                Vector.Store(next, state + i);
                Vector.Store(next, y + i);
            }
            for (; i < width; i++)
                y[i] = state[i] = l[i] * state[i] + v[i] * Activate(kind, new Vector<T>(g[i]))[0];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Activate<T>(ActivationKind kind, Vector<T> x) where T : unmanaged, IFloatingPointIeee754<T> => kind switch
    {
        ActivationKind.Sigmoid => Sigmoid(x),
        ActivationKind.Tanh => Vector.Create(T.CreateTruncating(2)) * Sigmoid(x + x) - Vector<T>.One,
        ActivationKind.SiLU => x * Sigmoid(x),
        ActivationKind.ReLU => Vector.Max(x, Vector<T>.Zero),
        _ => x,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Sigmoid<T>(Vector<T> x) where T : unmanaged, IFloatingPointIeee754<T> =>
        Vector<T>.One / (Vector<T>.One + VectorExp.Exp(-x));
}
