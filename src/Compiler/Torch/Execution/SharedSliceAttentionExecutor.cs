using Duality.Ir;
using Duality.Kernels;
using Duality.Structure;
using Duality.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// A gated linear attention whose query, key or value is a Concat, read only by it, of one slice per head of one node
/// (Mamba-2's B and C: each group's slice of [x; B; C] once for every head of the group): the fused loop reads each head's
/// slice where it lies, and the Concat, which would copy every slice once per head reading it, is not computed; with
/// gradients the reverse pass reads them there too and adds each head's gradient into the columns it read (one gradient
/// for the node, where each slice would give a zero-filled one of its full size). On the CPU, in float32 or float64 (as
/// the attention's own loop); otherwise the nodes run one by one.
/// </summary>
internal sealed class SharedSliceAttentionExecutor : IFusedExecutor
{
    /// <summary>A branch read from node <paramref name="Source"/>: head h's row from column <paramref name="Columns"/>[h] on,
    /// in place of the Concat <paramref name="Concat"/> (or the branch's own value, packed, without one).</summary>
    private sealed record Branch(int Source, int[] Columns, int? Concat);

    private readonly Branch query, key, value;
    private readonly GatedLinearAttention node;
    private readonly GatedLinearAttentionModule module;

    private SharedSliceAttentionExecutor(GatedLinearAttention node, GatedLinearAttentionModule module, Branch query, Branch key, Branch value,
        int result, int trigger)
    {
        (this.node, this.module, this.query, this.key, this.value) = (node, module, query, key, value);
        (Result, Trigger) = (result, trigger);
        Interior = [.. new[] { query, key, value }.Select(b => b.Concat).OfType<int>()];
    }

    public string Kind => "attention reading shared slices";

    public int Trigger { get; }

    public int Result { get; }

    public IReadOnlyList<int> Interior { get; }

    public static IEnumerable<SharedSliceAttentionExecutor> For(Graph graph, NodeModule?[] modules)
    {
        var readers = GatedLayers.Readers(graph);
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            if (graph.Nodes[i] is not GatedLinearAttention node || modules[i] is not GatedLinearAttentionModule module) continue;
            var (q, k, v) = (Read(graph, readers, node.Query, node.Heads, node.KeyWidth), Read(graph, readers, node.Key, node.Heads, node.KeyWidth),
                Read(graph, readers, node.Value, node.Heads, node.ValueWidth));
            if (q.Concat is null && k.Concat is null && v.Concat is null) continue;
            var taken = new[] { q.Concat, k.Concat, v.Concat }.OfType<int>().ToHashSet();
            var trigger = node.Sources.Select(s => s.Index).Where(s => !taken.Contains(s)).Concat([q.Source, k.Source, v.Source]).Max();
            yield return new SharedSliceAttentionExecutor(node, module, q, k, v, i, trigger);
        }
    }

    /// <summary>The branch <paramref name="id"/>: a Concat read only here of one slice per head, each <paramref name="width"/>
    /// wide, of one node; else the branch's value, packed.</summary>
    private static Branch Read(Graph graph, int[] readers, NodeId id, int heads, int width)
    {
        var packed = new Branch(id.Index, [.. Enumerable.Range(0, heads).Select(h => h * width)], null);
        if (graph[id] is not Concat concat || readers[id.Index] != 1 || concat.Parts.Count != heads) return packed;
        var slices = concat.Parts.Select(p => graph[p] as Slice).ToList();
        if (slices.Any(s => s is null || s.Length != width || s.Source != slices[0]!.Source)) return packed;
        return new Branch(slices[0]!.Source.Index, [.. slices.Select(s => s!.Start)], id.Index);
    }

    public Tensor? TryRun(Tensor[] values, Workspace? workspace)
    {
        var inputs = node.Sources.Select(s => values[s.Index] ?? values[query.Source]).ToArray();
        // the distinct nodes q, k and v are read from, each once
        var nodes = new[] { query.Source, key.Source, value.Source }.Distinct().ToList();
        var sources = nodes.Select(n => values[n]).ToArray();
        Tensor[] read = [.. sources, .. inputs.Skip(3)];
        if (!module.RunsRecurrent(sources[0]) || read.Any(t => t.device.type != DeviceType.CPU || t.dtype != sources[0].dtype)) return null;
        // the batch, time, dtype and device the loop takes from its first input
        inputs[0] = sources[0];
        GatedLinearAttentionFunction.Operand Operand(Branch b) => new(nodes.IndexOf(b.Source), b.Columns);
        return module.RunShared(sources, new(Operand(query), Operand(key), Operand(value)), inputs);
    }
}
