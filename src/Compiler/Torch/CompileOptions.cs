using Duality.Ir;
using Duality.Passes;
using Duality.Torch;
using static TorchSharp.torch;

namespace Duality;

/// <summary>How to compile: element type, device, and the seed for weights the graph does not carry.</summary>
public sealed record CompileOptions
{
    public ScalarType DType { get; init; } = ScalarType.Float32;

    public Device? Device { get; init; }

    public int Seed { get; init; }

    public ExecutionMode Execution { get; init; } = ExecutionMode.Auto;

    /// <summary>
    /// Lets forward passes without gradients keep the tensors of values that die within the pass (projections,
    /// real scans on the CPU, the products and state of a gate feeding a recurrence; never a graph output or a
    /// value another node reads as a view) and write them again on the next call with the same shapes. Outputs
    /// are always new tensors. Costs memory (one tensor per such value, until
    /// <see cref="CompiledGraph.ReleaseBuffers"/> or disposal) and spares allocations: large tensors otherwise
    /// arrive as fresh pages the system zero-fills on first touch.
    /// </summary>
    public bool ReuseBuffers { get; init; }

    public static CompileOptions Float64 { get; } = new() { DType = ScalarType.Float64 };
}
