using Duality.Torch;
using Duality.Ir;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// Tensors a compiled graph keeps between forward passes without gradients (<see cref="CompileOptions.ReuseBuffers"/>),
/// each owned by one node or one fused group and one of its slots, for values that die within the pass. A buffer is
/// allocated again only when the shape, type or device changes.
/// </summary>
internal sealed class Workspace(Graph graph) : IDisposable
{
    private readonly bool[] dies = Enumerable.Range(0, graph.Nodes.Count).Select(node => DiesWithinPass(graph, node)).ToArray();

    /// <summary>The buffers of one node (owner = its index) or one fused group (owner = ~ its result's index).</summary>
    public KeptBuffers For(int owner) => new(this, owner);

    /// <summary>Whether node <paramref name="node"/>'s value may live in a kept buffer (<see cref="DiesWithinPass(Graph, int)"/>).</summary>
    public bool Dies(int node) => dies[node];

    private readonly Dictionary<(int Owner, int Slot), Tensor> buffers = [];

    public Tensor Take(int owner, int slot, long[] shape, ScalarType dtype, Device device)
    {
        if (buffers.TryGetValue((owner, slot), out var kept) && !kept.IsInvalid && kept.dtype == dtype
            && kept.device_type == device.type && kept.device_index == device.index
            && kept.shape.SequenceEqual(shape))
            return kept;
        kept?.Dispose();
        return buffers[(owner, slot)] = empty(shape, dtype: dtype, device: device).DetachFromDisposeScope();
    }

    public void Dispose()
    {
        foreach (var buffer in buffers.Values) buffer.Dispose();
        buffers.Clear();
    }

    /// <summary>
    /// Whether a node's value can live in a reused buffer: it is no output of the graph, and no node reading it may
    /// return a view of it (a slice, an identity activation, a one-part concat: as each kind's execution declares).
    /// </summary>
    private static bool DiesWithinPass(Graph graph, int node) =>
        !graph.Outputs.Any(o => o.Index == node)
        && graph.Nodes.Where(n => n.Sources.Any(s => s.Index == node)).All(reader => !NodeExecutions.For(reader).ReturnsView(reader));
}

/// <summary>The kept buffers of one owner in a <see cref="Workspace"/>.</summary>
internal readonly record struct KeptBuffers(Workspace Workspace, int Owner)
{
    public Tensor Take(int slot, long[] shape, ScalarType dtype, Device device) => Workspace.Take(Owner, slot, shape, dtype, device);

    /// <summary>Whether the owner's result (the node's value, or the group's result) dies within the pass.</summary>
    public bool ResultDies => Workspace.Dies(Owner >= 0 ? Owner : ~Owner);

    /// <summary>
    /// Where a kernel writes the tensor of one slot: the owner's kept buffer when there are buffers and
    /// <paramref name="keep"/> allows it, else recycled memory (<see cref="Execution.LargeTensors"/>) when large.
    /// </summary>
    public static Func<long[], ScalarType, Tensor> Allocator(KeptBuffers? kept, int slot, Device device, bool keep = true) =>
        kept is { } buffers && keep ? (shape, dtype) => buffers.Take(slot, shape, dtype, device) : Execution.LargeTensors.Empty;
}
