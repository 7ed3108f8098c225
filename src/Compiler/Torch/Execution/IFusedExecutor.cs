using Duality.Torch;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// Runs a group of nodes as one operation during a forward pass: after node
/// <see cref="Trigger"/> is computed it produces node <see cref="Result"/>, and the nodes in
/// <see cref="Interior"/> are then not computed. Returning null leaves every node to run by itself.
/// Scratch tensors may come from the <see cref="Workspace"/> when one is given (never the result, unless the
/// result dies within the pass).
/// </summary>
internal interface IFusedExecutor
{
    /// <summary>What the group is, for <see cref="Torch.FusedGroup.Kind"/>.</summary>
    string Kind { get; }

    int Trigger { get; }

    int Result { get; }

    IReadOnlyList<int> Interior { get; }

    Tensor? TryRun(Tensor[] values, Workspace? workspace);

    /// <summary>Forgets anything read from the weights (their structure), so the next run reads it again.</summary>
    void Forget() { }
}

