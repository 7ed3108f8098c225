using System.Numerics;
using System.Runtime.CompilerServices;
using Duality.Ir;

namespace Duality.Kernels;

/// <summary>
/// A gate feeding a real diagonal recurrence, fused: h_t = lambda * h_{t-1} + (value_t + a) * f(gate_t + c),
/// never materialising f(gate) or the product; a and c are optional biases ([N] or null) of the projections
/// that produced value and gate. value, gate, h: [B, T, N] contiguous (h may be value itself); lambda: [N];
/// h0: [N] or null. Work is split as the scans split theirs (<see cref="ScanPartition"/>): (batch row, block of
/// channels) pieces run in parallel, each walking through time, blocks as wide as the number of pieces allows,
/// so each step of a piece reads whole pages (narrow blocks revisit every page, paying a TLB miss each time).
/// </summary>
internal static unsafe class GatedScan
{
    public static bool Supports(ActivationKind kind) =>
        kind is ActivationKind.Identity or ActivationKind.Sigmoid or ActivationKind.Tanh or ActivationKind.SiLU or ActivationKind.ReLU;

    public readonly record struct Shape(int Batch, int Time, int Width);

    /// <summary>Optional per-channel biases of the value and the gate, added before the product.</summary>
    public readonly struct Biases<T>(T* value, T* gate) where T : unmanaged
    {
        public T* Value { get; } = value;

        public T* Gate { get; } = gate;
    }

    public static void Run<T>(T* value, T* gate, T* lambda, T* h0, T* h, Biases<T> biases, ActivationKind kind, Shape shape)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (shape.Time > 0)
            ScanPartition.For(shape.Batch, shape.Width).Run(item =>
                RunPiece(value, gate, lambda, h0, h, biases, kind, shape, item.Batch, item.Start, item.Count));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunPiece<T>(T* value, T* gate, T* lambda, T* h0, T* h, Biases<T> biases, ActivationKind kind, Shape shape,
        int b, int start, int width) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* l = lambda + start, a = biases.Value is null ? null : biases.Value + start, c = biases.Gate is null ? null : biases.Gate + start;
        for (int t = 0; t < shape.Time; t++)
        {
            long offset = ((long)b * shape.Time + t) * shape.Width + start;
            T* v = value + offset, g = gate + offset, y = h + offset;
            // h_{t-1} is the row just written (still in cache); before the first step, h0 or zero
            T* previous = t > 0 ? y - shape.Width : h0 is null ? null : h0 + start;
            int i = 0;
            for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
            {
                var input = Vector.Load(v + i);
                var gating = Vector.Load(g + i);
                if (a is not null) input += Vector.Load(a + i);
                if (c is not null) gating += Vector.Load(c + i);
                var product = input * Activate(kind, gating);
                var next = previous is null ? product : VectorFused.MultiplyAdd(Vector.Load(l + i), Vector.Load(previous + i), product);
                Vector.Store(next, y + i);
            }
            for (; i < width; i++)
            {
                T input = v[i] + (a is null ? T.Zero : a[i]), gating = g[i] + (c is null ? T.Zero : c[i]);
                T product = input * Activate(kind, new Vector<T>(gating))[0];
                y[i] = previous is null ? product : l[i] * previous[i] + product;
            }
        }
    }

    /// <summary>
    /// The reverse pass, with the gate's inputs saved by the forward pass: a_t = dh_t + lambda a_{t+1},
    /// dvalue_t = a_t f(gate_t), dgate_t = a_t value_t f'(gate_t), and the eigenvalue gradient's rows
    /// lambdaRows[b] = sum_t a_t h_{t-1} (null when lambda is not trained). dh is [B, T, N], or [B, T] for a
    /// gradient equal across channels (channelBroadcast).
    /// </summary>
    public static void RunBackward<T>(T* dh, bool channelBroadcast, T* value, T* gate, T* lambda, T* h0, T* h,
        T* dValue, T* dGate, T* lambdaRows, ActivationKind kind, Shape shape) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (shape.Time > 0)
            ScanPartition.For(shape.Batch, shape.Width).Run(item =>
                BackwardPiece(dh, channelBroadcast, value, gate, lambda, h0, h, dValue, dGate, lambdaRows, kind, shape, item.Batch, item.Start,
                    item.Count));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardPiece<T>(T* dh, bool channelBroadcast, T* value, T* gate, T* lambda, T* h0, T* h,
        T* dValue, T* dGate, T* lambdaRows, ActivationKind kind, Shape shape, int b, int start, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* adjoint = stackalloc T[width], products = stackalloc T[width];
        new Span<T>(adjoint, width).Clear();
        new Span<T>(products, width).Clear();
        T* l = lambda + start;
        for (int t = shape.Time - 1; t >= 0; t--)
        {
            long row = (long)b * shape.Time + t, offset = row * shape.Width + start;
            T* v = value + offset, g = gate + offset, dv = dValue + offset, dg = dGate + offset, d = dh + (channelBroadcast ? row : offset);
            T* previous = t > 0 ? h + offset - shape.Width : h0 is null ? null : h0 + start;
            int i = 0;
            for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
            {
                var incoming = channelBroadcast ? new Vector<T>(d[0]) : Vector.Load(d + i);
                var a = VectorFused.MultiplyAdd(Vector.Load(l + i), Vector.Load(adjoint + i), incoming);
                Vector.Store(a, adjoint + i);
                var activated = ActivateWithSlope(kind, Vector.Load(g + i), out var slope);
                Vector.Store(a * activated, dv + i);
                Vector.Store(a * Vector.Load(v + i) * slope, dg + i);
                if (previous is not null) Vector.Store(VectorFused.MultiplyAdd(a, Vector.Load(previous + i), Vector.Load(products + i)), products + i);
            }
            for (; i < width; i++)
            {
                T a = (channelBroadcast ? d[0] : d[i]) + l[i] * adjoint[i];
                adjoint[i] = a;
                var activated = ActivateWithSlope(kind, new Vector<T>(g[i]), out var slope);
                dv[i] = a * activated[0];
                dg[i] = a * v[i] * slope[0];
                if (previous is not null) products[i] += a * previous[i];
            }
        }
        if (lambdaRows is not null) new Span<T>(products, width).CopyTo(new Span<T>(lambdaRows + (long)b * shape.Width + start, width));
    }

    /// <summary>f(x) and f'(x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> ActivateWithSlope<T>(ActivationKind kind, Vector<T> x, out Vector<T> slope) where T : unmanaged, IFloatingPointIeee754<T>
    {
        switch (kind)
        {
            case ActivationKind.Sigmoid:
            {
                var s = Sigmoid(x);
                slope = s * (Vector<T>.One - s);
                return s;
            }
            case ActivationKind.Tanh:
            {
                var tanh = Vector.Create(T.CreateTruncating(2)) * Sigmoid(x + x) - Vector<T>.One;
                slope = Vector<T>.One - tanh * tanh;
                return tanh;
            }
            case ActivationKind.SiLU:
            {
                var s = Sigmoid(x);
                slope = s * VectorFused.MultiplyAdd(x, Vector<T>.One - s, Vector<T>.One);
                return x * s;
            }
            case ActivationKind.ReLU:
                slope = Vector.ConditionalSelect(Vector.GreaterThan(x, Vector<T>.Zero), Vector<T>.One, Vector<T>.Zero);
                return Vector.Max(x, Vector<T>.Zero);
            default:
                slope = Vector<T>.One;
                return x;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Activate<T>(ActivationKind kind, Vector<T> x) where T : unmanaged, IFloatingPointIeee754<T> =>
        ActivateWithSlope(kind, x, out _);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Sigmoid<T>(Vector<T> x) where T : unmanaged, IFloatingPointIeee754<T> =>
        Vector<T>.One / (Vector<T>.One + VectorExp.Exp(-x));
}
