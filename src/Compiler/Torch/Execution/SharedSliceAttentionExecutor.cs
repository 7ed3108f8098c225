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
/// for the node, where each slice would give a zero-filled one of its full size). A branch that is a slice of a node
/// another branch reads is read within that node's rows too (Mamba-2's x beside B and C: one gradient for [x; B; C]). A
/// skip over the value read only by an Add of the attention's output, read only there (Mamba-2's y + D x), joins the
/// group: the output y + D v in one pass, and backward dv += D dy, dD = sum dy v in one more (<see cref="ValueSkip"/>),
/// where node by node the skip's product, sum, slice and accumulated gradients each take a pass over the rows. On the
/// CPU, in float32 or float64 (as the attention's own loop); otherwise the nodes run one by one.
/// </summary>
internal sealed class SharedSliceAttentionExecutor : IFusedExecutor
{
    /// <summary>A branch read from node <paramref name="Source"/>: head h's row from column <paramref name="Columns"/>[h] on,
    /// in place of the Concat <paramref name="Concat"/> (or the branch's own value, packed, without one).</summary>
    private sealed record Branch(int Source, int[] Columns, int? Concat);

    /// <summary>The skip D v: the ChannelScale <paramref name="Scale"/> over the value, added to the attention's output by
    /// <paramref name="Add"/>.</summary>
    private sealed record Skip(int Scale, int Add, ChannelScaleModule Module);

    private readonly Branch query, key, value;
    private readonly Skip? skip;
    private readonly GatedLinearAttention node;
    private readonly GatedLinearAttentionModule module;

    private SharedSliceAttentionExecutor(GatedLinearAttention node, GatedLinearAttentionModule module, Branch query, Branch key, Branch value,
        Skip? skip, int attention, int trigger)
    {
        (this.node, this.module, this.query, this.key, this.value, this.skip) = (node, module, query, key, value, skip);
        (Result, Trigger) = (skip?.Add ?? attention, trigger);
        Interior = [.. new[] { query, key, value }.Select(b => b.Concat).OfType<int>(), .. skip is null ? Array.Empty<int>() : [attention, skip.Scale]];
    }

    public string Kind => skip is null ? "attention reading shared slices" : "attention reading shared slices, with the skip D v";

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
            // a branch that is a slice of wider rows is read within them when another branch reads the same node (Mamba-2's x
            // beside B and C, or q, k and v sliced from one projection): their gradients then form one tensor
            var (qw, kw, vw) = (Within(graph, node.Query, q, node.Heads, node.KeyWidth), Within(graph, node.Key, k, node.Heads, node.KeyWidth),
                Within(graph, node.Value, v, node.Heads, node.ValueWidth));
            bool Shares(Branch b) => new[] { qw, kw, vw }.Count(o => o.Source == b.Source) > 1;
            var within = new[] { (qw, q), (kw, k), (vw, v) }.Any(b => !ReferenceEquals(b.Item1, b.Item2) && Shares(b.Item1));
            (q, k, v) = (Shares(qw) ? qw : q, Shares(kw) ? kw : k, Shares(vw) ? vw : v);
            var skip = SkipOver(graph, modules, readers, i, node.Value);
            if (q.Concat is null && k.Concat is null && v.Concat is null && skip is null && !within) continue;
            var taken = new[] { q.Concat, k.Concat, v.Concat }.OfType<int>().ToHashSet();
            var trigger = node.Sources.Select(s => s.Index).Where(s => !taken.Contains(s)).Concat([q.Source, k.Source, v.Source]).Max();
            yield return new SharedSliceAttentionExecutor(node, module, q, k, v, skip, i, trigger);
        }
    }

    /// <summary>Branch <paramref name="id"/> read within the rows it is sliced from, when it is a slice; else as it is.</summary>
    private static Branch Within(Graph graph, NodeId id, Branch branch, int heads, int width) =>
        branch.Concat is null && graph[id] is Slice slice
            ? new Branch(slice.Source.Index, [.. Enumerable.Range(0, heads).Select(h => slice.Start + h * width)], null)
            : branch;

    /// <summary>The Add of attention <paramref name="attention"/>'s output (read only there) and a ChannelScale of its value
    /// <paramref name="value"/> (read only there), or null.</summary>
    private static Skip? SkipOver(Graph graph, NodeModule?[] modules, int[] readers, int attention, NodeId value)
    {
        if (readers[attention] != 1) return null;
        var add = Enumerable.Range(attention + 1, graph.Nodes.Count - attention - 1)
            .FirstOrDefault(j => graph.Nodes[j].Sources.Any(s => s.Index == attention), -1);
        if (add < 0 || graph.Nodes[add] is not Add sum) return null;
        var other = sum.Left.Index == attention ? sum.Right : sum.Left;
        return other.Index != attention && readers[other.Index] == 1 && graph[other] is ChannelScale scale && scale.Source == value
               && modules[other.Index] is ChannelScaleModule channels
            ? new Skip(other.Index, add, channels)
            : null;
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
        return module.RunShared(sources, new(Operand(query), Operand(key), Operand(value)), inputs, skip?.Module.Factors);
    }
}
