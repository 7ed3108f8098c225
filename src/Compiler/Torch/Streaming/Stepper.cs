using System.Numerics;
using Duality.Ir;
using static Duality.Streaming.VectorMath;

namespace Duality.Streaming;

/// <summary>
/// One node advanced by one token over preallocated buffers. Output: [batch, width] row-major, written
/// by <see cref="Step"/> from the sources' outputs of the same step. Nothing is allocated per step.
/// </summary>
internal abstract class Stepper<T>(int batch, int width) where T : unmanaged, INumber<T>
{
    public T[] Output { get; } = new T[batch * width];

    public int Batch { get; } = batch;

    public int Width { get; } = width;

    public Span<T> Row(int b) => Output.AsSpan(b * Width, Width);

    public abstract void Step();

    /// <summary>Back to the state before the first step.</summary>
    public virtual void Reset() { }
}

/// <summary>The caller writes the step's values into <see cref="Stepper{T}.Output"/>.</summary>
internal sealed class InputStepper<T>(int batch, int width) : Stepper<T>(batch, width) where T : unmanaged, INumber<T>
{
    public override void Step() { }
}
