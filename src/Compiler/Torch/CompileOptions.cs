using Duality.Ir;
using Duality.Passes;
using Duality.Torch;
using static TorchSharp.torch;

namespace Duality;

/// <summary>How to compile: element type, device, and the seed for weights the graph does not carry.</summary>
public sealed record CompileOptions
{
    /// The element type of parameters and activations: Float32 (the default) or Float64.
    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// Where parameters live and forward passes run; null (the default) is the CPU.
    public Device? Device { get; init; }

    /// The seed of <see cref="Passes.InitializeWeights"/> for nodes without weights: the same seed gives the same
    /// weights on every platform. Default 0.
    public int Seed { get; init; }

    /// Which kernels run the graph; <see cref="ExecutionMode.Auto"/> (the default) picks the fastest that applies.
    /// Every mode computes the same function.
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

    /// The defaults with <see cref="DType"/> Float64: CPU, seed 0, automatic execution.
    public static CompileOptions Float64 { get; } = new() { DType = ScalarType.Float64 };
}
