using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Duality.Ir;
using static Duality.Kernels.VectorRows;

namespace Duality.Kernels;

/// <summary>
/// y = value * f(gate) elementwise in one pass, and its reverse pass dvalue = dy f(gate), dgate = dy value f'(gate) in
/// one more, for the gate functions <see cref="GatedScan.Supports"/> lists (their values and slopes as the fused gate
/// and recurrence computes them). value, gate, y, dy and the gradients: the same number of elements, contiguous. Parallel
/// over ranges of elements beyond <see cref="ParallelWork"/>.
/// </summary>
internal static unsafe class GateProduct
{
    /// <summary>Elements from which ranges run in parallel.</summary>
    public const long ParallelWork = 1 << 16;

    public static void Forward<T>(T* value, T* gate, T* y, long count, ActivationKind kind) where T : unmanaged, IFloatingPointIeee754<T> =>
        InRanges(count, (start, end) => ForwardRange(value, gate, y, start, end, kind));

    public static void Backward<T>(T* dy, T* value, T* gate, T* dValue, T* dGate, long count, ActivationKind kind)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        InRanges(count, (start, end) => BackwardRange(dy, value, gate, dValue, dGate, start, end, kind));

    /// <summary>Ranges whose starts are multiples of the vector width: one per core beyond the threshold, else one.</summary>
    private static void InRanges(long count, Action<long, long> range)
    {
        var ranges = count >= ParallelWork ? Environment.ProcessorCount : 1;
        long Start(int r) => r == ranges ? count : count * r / ranges / Vector<byte>.Count * Vector<byte>.Count;
        if (ranges == 1) range(0, count);
        else KernelTeam.For(ranges, r => range(Start(r), Start(r + 1)));
    }

    private static void ForwardRange<T>(T* value, T* gate, T* y, long start, long end, ActivationKind kind) where T : unmanaged, IFloatingPointIeee754<T> =>
        Activations.Visit<int, ForwardOf<T>>(kind, new(value, gate, y, start, end));

    /// <summary>The forward pass with f as a type.</summary>
    private readonly struct ForwardOf<T>(T* value, T* gate, T* y, long start, long end) : IActivationVisitor<int>
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        public int Visit<TActivation>() where TActivation : struct, IActivation
        {
            ForwardRange<T, TActivation>(value, gate, y, start, end);
            return 0;
        }
    }

    /// <summary>y = value f(gate): 512-bit vectors where they run at full rate, then Vector&lt;T&gt;, then one padded vector.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRange<T, TActivation>(T* value, T* gate, T* y, long start, long end)
        where T : unmanaged, IFloatingPointIeee754<T> where TActivation : struct, IActivation
    {
        long i = WideLanes<T>.Faster ? Products<T, Vector512<T>, WideLanes<T>, TActivation>(value, gate, y, start, end) : start;
        i = Products<T, Vector<T>, NativeLanes<T>, TActivation>(value, gate, y, i, end);
        if (i == end) return;
        // the last few elements through one padded vector
        var (gates, values) = (Tail(gate + i, (int)(end - i)), Tail(value + i, (int)(end - i)));
        var products = values * LanesMath.Activate<T, Vector<T>, NativeLanes<T>>(TActivation.Kind, gates);
        for (int j = 0; i + j < end; j++) y[i + j] = products[j];
    }

    /// <summary>The whole vectors of one width from element <paramref name="i"/>; returns where they end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Products<T, TV, TL, TActivation>(T* value, T* gate, T* y, long i, long end)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T> where TActivation : struct, IActivation
    {
        for (; i <= end - TL.Count; i += TL.Count)
            TL.Store(TL.Multiply(TL.Load(value + i), LanesMath.Activate<T, TV, TL>(TActivation.Kind, TL.Load(gate + i))), y + i);
        return i;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardRange<T>(T* dy, T* value, T* gate, T* dValue, T* dGate, long start, long end, ActivationKind kind)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = Vector<T>.Count;
        long i = start;
        for (; i <= end - n; i += n)
        {
            var f = GatedScan.ActivateWithSlope(kind, Vector.Load(gate + i), out var slope);
            var d = Vector.Load(dy + i);
            Vector.Store(d * f, dValue + i);
            Vector.Store(d * Vector.Load(value + i) * slope, dGate + i);
        }
        if (i == end) return;
        var fTail = GatedScan.ActivateWithSlope(kind, Tail(gate + i, (int)(end - i)), out var slopeTail);
        var (dTail, vTail) = (Tail(dy + i, (int)(end - i)), Tail(value + i, (int)(end - i)));
        var (values, gates) = (dTail * fTail, dTail * vTail * slopeTail);
        for (int j = 0; i + j < end; j++) (dValue[i + j], dGate[i + j]) = (values[j], gates[j]);
    }
}
