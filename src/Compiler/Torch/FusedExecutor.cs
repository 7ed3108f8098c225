using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// Runs a group of nodes as one operation during a forward pass without gradients: after node
/// <see cref="Trigger"/> is computed it produces node <see cref="Result"/>, and the nodes in
/// <see cref="Interior"/> are then not computed. Returning null leaves every node to run by itself.
/// Scratch tensors may come from the <see cref="Workspace"/> when one is given (never the result, unless the
/// result dies within the pass).
/// </summary>
internal interface IFusedExecutor
{
    int Trigger { get; }

    int Result { get; }

    IReadOnlyList<int> Interior { get; }

    Tensor? TryRun(Tensor[] values, Workspace? workspace);
}
