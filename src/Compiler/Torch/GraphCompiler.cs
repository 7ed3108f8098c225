using Duality.Ir;
using Duality.Passes;
using Duality.Torch;
using static TorchSharp.torch;

namespace Duality;

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
