using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Duality.Ir;

namespace Duality.Kernels;

/// <summary>
/// A tree of elementwise nodes evaluated in one pass: each step an activation f(a), a constant multiple c a, a
/// per-channel multiple s * a or a sum a + b of the chain's inputs or earlier steps, all [rows, width] contiguous;
/// the last step is the chain's value. Rows go in tiles of about <see cref="TileElements"/> elements, each step's
/// values for a tile kept in a scratch row that stays in cache, so the inputs are read once and only the value is
/// written, where node by node each step reads and writes a whole tensor. Ranges of rows run in parallel as
/// <see cref="RowRanges"/> splits them.
/// </summary>
internal static unsafe class ElementwiseChain
{
    /// <summary>About this many elements per tile (at least one row).</summary>
    public const int TileElements = 1024;

    public enum Operation { Activate, Scale, ChannelScale, Add }

    /// <summary>
    /// One step. Operands below the chain's input count are its inputs, the rest earlier steps (input count + step).
    /// <paramref name="Factors"/> indexes the per-channel factors of a channel scale.
    /// </summary>
    public readonly record struct Step(Operation Operation, int Left, int Right = -1, ActivationKind Kind = ActivationKind.Identity,
        double Factor = 1, int Factors = -1);

    /// <summary>The activations a step computes.</summary>
    public static bool Supports(ActivationKind kind) =>
        GatedScan.Supports(kind) || kind is ActivationKind.LogSigmoid or ActivationKind.Softplus;

    /// <summary>
    /// The chain's value into <paramref name="y"/>: the inputs (addresses of T) and y [rows, width], the factors [width] each.
    /// </summary>
    public static void Forward<T>(nint[] inputs, nint[] factors, Step[] steps, T* y, long rows, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int tileRows = Math.Max(1, TileElements / width), tile = tileRows * width;
        // each channel scale's factors repeated over a tile's rows, so that a tile multiplies entry by entry
        var repeated = new T[factors.Length * tile];
        for (int f = 0; f < factors.Length; f++)
            for (int i = 0; i < tile; i++) repeated[f * tile + i] = ((T*)factors[f])[i % width];
        var output = (nint)y;
        RowRanges.Run(RowRanges.Count(rows, width), rows, (_, first, end) =>
        {
            using var scratch = new RentedArray<T>((long)steps.Length * tile);
            fixed (T* work = scratch.Array, scales = repeated)
                for (long row = first; row < end; row += tileRows)
                    Tile(inputs, scales, steps, work, tile, (T*)output, row * width, (int)Math.Min(tileRows, end - row) * width);
        });
    }

    /// <summary>Every step over one tile of <paramref name="count"/> elements from element <paramref name="offset"/>.</summary>
    private static void Tile<T>(nint[] inputs, T* scales, Step[] steps, T* work, int tile, T* y, long offset, int count)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int inputCount = inputs.Length;
        T* Operand(int i) => i < inputCount ? (T*)inputs[i] + offset : work + (long)(i - inputCount) * tile;
        for (int s = 0; s < steps.Length; s++)
        {
            var step = steps[s];
            T* into = s == steps.Length - 1 ? y + offset : work + (long)s * tile;
            T* a = Operand(step.Left);
            var c = T.CreateChecked(step.Factor);
            switch (step.Operation)
            {
                case Operation.Add: Map<T, Sum<T>>(a, Operand(step.Right), c, into, count); break;
                case Operation.Scale: Map<T, Product<T>>(a, null, c, into, count); break;
                case Operation.ChannelScale: Map<T, Product<T>>(a, scales + (long)step.Factors * tile, c, into, count); break;
                default: Activations.Visit<int, MapActivation<T>>(step.Kind, new(a, into, count)); break;
            }
        }
    }

    /// <summary>
    /// into = F(a, b) over <paramref name="count"/> elements, b the second operand's entries or, when null, c in every
    /// entry: 512-bit vectors where they run at full rate, then Vector&lt;T&gt;, then the last few through one padded
    /// vector. Each function its own loop, so that it is compiled with only its own arithmetic inlined.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Map<T, F>(T* a, T* b, T c, T* into, int count) where T : unmanaged, IFloatingPointIeee754<T> where F : IVectorFunction<T>
    {
        int i = WideLanes<T>.Faster ? Map<T, Vector512<T>, WideLanes<T>, F>(a, b, c, into, count, 0) : 0;
        i = Map<T, Vector<T>, NativeLanes<T>, F>(a, b, c, into, count, i);
        if (i == count) return;
        var last = F.Apply<Vector<T>, NativeLanes<T>>(VectorRows.Tail(a + i, count - i), b is null ? new Vector<T>(c) : VectorRows.Tail(b + i, count - i));
        for (int j = 0; i + j < count; j++) into[i + j] = last[j];
    }

    /// <summary>The whole vectors of one width from element <paramref name="i"/>; returns where they end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Map<T, TV, TL, F>(T* a, T* b, T c, T* into, int count, int i)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T> where F : IVectorFunction<T>
    {
        int n = TL.Count;
        if (b is null)
        {
            var constant = TL.Broadcast(c);
            for (; i <= count - n; i += n) TL.Store(F.Apply<TV, TL>(TL.Load(a + i), constant), into + i);
        }
        else
            for (; i <= count - n; i += n) TL.Store(F.Apply<TV, TL>(TL.Load(a + i), TL.Load(b + i)), into + i);
        return i;
    }

    private interface IVectorFunction<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        static abstract TV Apply<TV, TL>(TV x, TV other) where TV : struct where TL : ILanes<TV, T>;
    }

    private readonly struct Sum<T> : IVectorFunction<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TV Apply<TV, TL>(TV x, TV other) where TV : struct where TL : ILanes<TV, T> => TL.Add(x, other);
    }

    private readonly struct Product<T> : IVectorFunction<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TV Apply<TV, TL>(TV x, TV other) where TV : struct where TL : ILanes<TV, T> => TL.Multiply(x, other);
    }

    /// <summary>into = f(a) for f a type.</summary>
    private readonly struct MapActivation<T>(T* a, T* into, int count) : IActivationVisitor<int> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public int Visit<TActivation>() where TActivation : struct, IActivation
        {
            if (TActivation.Kind == ActivationKind.Identity) throw new InvalidOperationException("the elementwise chain computes no identity");
            Map<T, Of<T, TActivation>>(a, null, T.Zero, into, count);
            return count;
        }
    }

    private readonly struct Of<T, TActivation> : IVectorFunction<T> where T : unmanaged, IFloatingPointIeee754<T> where TActivation : struct, IActivation
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TV Apply<TV, TL>(TV x, TV other) where TV : struct where TL : ILanes<TV, T> => LanesMath.Activate<T, TV, TL>(TActivation.Kind, x);
    }

}
