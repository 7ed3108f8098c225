using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Duality.Kernels;

/// <summary>
/// The vector operations of a fused loop at one vector width, so that one body serves Vector&lt;T&gt; and 512-bit vectors:
/// on hardware that runs 512-bit vectors at full rate Vector&lt;T&gt; still holds 256 bits unless the process opts in
/// (DOTNET_MaxVectorTBitWidth), and a loop bound by its multiply-adds does twice the work per instruction at 512.
/// </summary>
internal unsafe interface ILanes<TV, T> where TV : struct where T : unmanaged
{
    static abstract int Count { get; }

    static abstract TV Load(T* p);

    static abstract void Store(TV v, T* p);

    static abstract TV Broadcast(T x);

    static abstract TV Multiply(TV a, TV b);

    static abstract TV Add(TV a, TV b);

    /// <summary>a b + c in one rounding.</summary>
    static abstract TV MultiplyAdd(TV a, TV b, TV c);

    static abstract TV Subtract(TV a, TV b);

    static abstract TV Divide(TV a, TV b);

    static abstract TV Abs(TV x);

    static abstract TV Min(TV a, TV b);

    static abstract TV Max(TV a, TV b);

    static abstract TV SquareRoot(TV x);

    /// <summary>To the nearest integer, ties to even.</summary>
    static abstract TV Round(TV x);

    /// <summary>All bits set where a &lt; b, none elsewhere.</summary>
    static abstract TV LessThan(TV a, TV b);

    /// <summary>a where the mask's bits are set, b elsewhere.</summary>
    static abstract TV Select(TV mask, TV a, TV b);

    /// <summary>2^k for integral k within the exponent's range, from the exponent bits.</summary>
    static abstract TV PowerOfTwo(TV k);
}

/// <summary>Vector&lt;T&gt;, the width the runtime chose.</summary>
internal readonly unsafe struct NativeLanes<T> : ILanes<Vector<T>, T> where T : unmanaged, INumber<T>
{
    public static int Count => Vector<T>.Count;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Load(T* p) => Vector.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector<T> v, T* p) => Vector.Store(v, p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Broadcast(T x) => new(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Multiply(Vector<T> a, Vector<T> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Add(Vector<T> a, Vector<T> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> MultiplyAdd(Vector<T> a, Vector<T> b, Vector<T> c) => VectorFused.MultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Subtract(Vector<T> a, Vector<T> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Divide(Vector<T> a, Vector<T> b) => a / b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Abs(Vector<T> x) => Vector.Abs(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Min(Vector<T> a, Vector<T> b) => Vector.Min(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Max(Vector<T> a, Vector<T> b) => Vector.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> SquareRoot(Vector<T> x) => Vector.SquareRoot(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Round(Vector<T> x) =>
        typeof(T) == typeof(float) ? Vector.As<float, T>(Vector.Round(Vector.As<T, float>(x))) : Vector.As<double, T>(Vector.Round(Vector.As<T, double>(x)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> LessThan(Vector<T> a, Vector<T> b) => Vector.LessThan(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Select(Vector<T> mask, Vector<T> a, Vector<T> b) => Vector.ConditionalSelect(mask, a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> PowerOfTwo(Vector<T> k) =>
        typeof(T) == typeof(float)
            ? Vector.As<int, T>(Vector.ShiftLeft(Vector.ConvertToInt32(Vector.As<T, float>(k)) + new Vector<int>(127), 23))
            : Vector.As<long, T>(Vector.ShiftLeft(Vector.ConvertToInt64(Vector.As<T, double>(k)) + new Vector<long>(1023), 52));
}

/// <summary>512-bit vectors (float and double).</summary>
internal readonly unsafe struct WideLanes<T> : ILanes<Vector512<T>, T> where T : unmanaged, INumber<T>
{
    /// <summary>Whether 512-bit vectors run at full rate here and are wider than Vector&lt;T&gt;.</summary>
    public static bool Faster => Vector512.IsHardwareAccelerated && Vector512<T>.Count > Vector<T>.Count;

    public static int Count => Vector512<T>.Count;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Load(T* p) => Vector512.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector512<T> v, T* p) => Vector512.Store(v, p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Broadcast(T x) => Vector512.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Multiply(Vector512<T> a, Vector512<T> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Add(Vector512<T> a, Vector512<T> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> MultiplyAdd(Vector512<T> a, Vector512<T> b, Vector512<T> c) =>
        typeof(T) == typeof(float)
            ? Vector512.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>()
            : Vector512.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Subtract(Vector512<T> a, Vector512<T> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Divide(Vector512<T> a, Vector512<T> b) => a / b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Abs(Vector512<T> x) => Vector512.Abs(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Min(Vector512<T> a, Vector512<T> b) => Vector512.Min(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Max(Vector512<T> a, Vector512<T> b) => Vector512.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> SquareRoot(Vector512<T> x) => Vector512.Sqrt(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Round(Vector512<T> x) =>
        typeof(T) == typeof(float) ? Vector512.Round(x.AsSingle()).As<float, T>() : Vector512.Round(x.AsDouble()).As<double, T>();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> LessThan(Vector512<T> a, Vector512<T> b) => Vector512.LessThan(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Select(Vector512<T> mask, Vector512<T> a, Vector512<T> b) => Vector512.ConditionalSelect(mask, a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> PowerOfTwo(Vector512<T> k) =>
        typeof(T) == typeof(float)
            ? Vector512.ShiftLeft(Vector512.ConvertToInt32(k.AsSingle()) + Vector512.Create(127), 23).As<int, T>()
            : Vector512.ShiftLeft(Vector512.ConvertToInt64(k.AsDouble()) + Vector512.Create(1023L), 52).As<long, T>();
}
