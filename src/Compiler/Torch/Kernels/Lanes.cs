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
}
