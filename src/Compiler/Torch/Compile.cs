using Duality.Ir;
using Duality.Passes;
using Duality.Torch;
using static TorchSharp.torch;

namespace Duality;

/// <summary>How recurrences, attention and groups of nodes execute.</summary>
public enum ExecutionMode
{
    /// <summary>
    /// The fastest form that applies, chosen from the device, the shapes, the weights' structure and whether
    /// gradients are recorded: fused CPU kernels per node, and without gradients fused groups of nodes
    /// (structure-aware gated-RNN layers, a gate feeding a recurrence); TorchSharp operations elsewhere.
    /// </summary>
    Auto,

    /// <summary>Each node with its own fused CPU kernel (scans, chunked or recurrent attention), no groups of nodes fused.</summary>
    PerNode,

    /// <summary>TorchSharp operations only: a step loop for recurrences, masked matrices for attention.</summary>
    TorchOps,
}

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

/// <summary>Graph -> TorchSharp module.</summary>
public static class GraphCompiler
{
    /// <summary>
    /// Compiles a verified graph. Nodes without weights get seeded values (<see cref="InitializeWeights"/>);
    /// nodes with weights keep theirs.
    /// </summary>
    public static CompiledGraph Compile(this Graph graph, CompileOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(graph);
        options ??= new CompileOptions();
        if (options.DType is not (ScalarType.Float32 or ScalarType.Float64))
            throw new ArgumentException($"compile to Float32 or Float64, not {options.DType}", nameof(options));
        var withWeights = InitializeWeights.Run(graph, options.Seed);
        return new CompiledGraph(withWeights, options.DType, options.Device ?? CPU, options.Execution, options.ReuseBuffers);
    }
}
