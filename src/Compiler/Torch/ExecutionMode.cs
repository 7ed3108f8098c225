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
