using System.Numerics;
using Duality.Ir;
using Duality.Kernels;
using Duality.Structure;
using Duality.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// Elementwise nodes (activations the pass computes, scales, channel scales, sums) each read only within the group,
/// ending in one whose value leaves it: minLSTM's log sigmoid (W_f x) - log sigmoid (W_i x), GLA's log sigmoid (W x) / 16,
/// RG-LRU's w sigmoid(W x). Without gradients on the CPU, one pass (<see cref="ElementwiseChain"/>) where node by node
/// each node reads and writes a [batch, time, width] tensor (libtorch's log sigmoid writes two). A group of one node
/// is formed only for the activations libtorch takes more than one operation or output for (log sigmoid, softplus).
/// With gradients, or on another device or dtype, its nodes run one by one. Nodes another group takes stay with it.
/// </summary>
internal sealed class ElementwiseChainExecutor : IFusedExecutor
{
    private readonly int[] inputs;
    private readonly ElementwiseChain.Step[] steps;
    private readonly ChannelScaleModule[] scales;

    private ElementwiseChainExecutor(int[] inputs, ElementwiseChain.Step[] steps, ChannelScaleModule[] scales, int result, int[] interior)
    {
        (this.inputs, this.steps, this.scales) = (inputs, steps, scales);
        (Result, Interior, Trigger) = (result, interior, inputs.Max());
    }

    public string Kind => "elementwise chain";

    public int Trigger { get; }

    public int Result { get; }

    public IReadOnlyList<int> Interior { get; }

    /// <summary>
    /// The groups, from the graph's end back: each elementwise node not yet in a group ends one, which takes every
    /// elementwise source whose readers are all in it, until none is left to take.
    /// </summary>
    public static IEnumerable<ElementwiseChainExecutor> For(Graph graph, NodeModule?[] modules, IReadOnlySet<int> taken)
    {
        var readers = GatedLayers.Readers(graph);
        var grouped = new bool[graph.Nodes.Count];
        bool Member(int i) => !taken.Contains(i) && !grouped[i] && Elementwise(graph.Nodes[i], modules[i]);
        var found = new List<ElementwiseChainExecutor>();
        for (int result = graph.Nodes.Count - 1; result >= 0; result--)
        {
            if (!Member(result)) continue;
            var group = new SortedSet<int> { result };
            for (var grew = true; grew;)
            {
                grew = false;
                var reads = group.SelectMany(i => graph.Nodes[i].Sources).GroupBy(s => s.Index).ToDictionary(g => g.Key, g => g.Count());
                foreach (var (source, count) in reads)
                    if (!group.Contains(source) && Member(source) && readers[source] == count) grew |= group.Add(source);
            }
            foreach (var i in group) grouped[i] = true;
            if (group.Count == 1 && graph.Nodes[result] is not Activation { Kind: ActivationKind.LogSigmoid or ActivationKind.Softplus }) continue;
            found.Add(Build(graph, modules, group, result));
        }
        return found;
    }

    private static bool Elementwise(Node node, NodeModule? module) => node switch
    {
        Activation a => a.Kind != ActivationKind.Identity && ElementwiseChain.Supports(a.Kind),
        Scale or Add => true,
        ChannelScale => module is ChannelScaleModule,
        _ => false,
    };

    private static ElementwiseChainExecutor Build(Graph graph, NodeModule?[] modules, SortedSet<int> group, int result)
    {
        var members = group.ToList();
        var inputs = members.SelectMany(i => graph.Nodes[i].Sources).Select(s => s.Index).Where(s => !group.Contains(s)).Distinct().Order().ToArray();
        int Operand(NodeId id) => group.Contains(id.Index) ? inputs.Length + members.IndexOf(id.Index) : Array.IndexOf(inputs, id.Index);
        var scales = new List<ChannelScaleModule>();
        var steps = members.Select(i => graph.Nodes[i] switch
        {
            Activation a => new ElementwiseChain.Step(ElementwiseChain.Operation.Activate, Operand(a.Source), Kind: a.Kind),
            Scale s => new ElementwiseChain.Step(ElementwiseChain.Operation.Scale, Operand(s.Source), Factor: s.Factor),
            Add add => new ElementwiseChain.Step(ElementwiseChain.Operation.Add, Operand(add.Left), Operand(add.Right)),
            ChannelScale c => AddScale(c, (ChannelScaleModule)modules[i]!),
            var other => throw new InvalidOperationException($"{other.Name} is not elementwise"),
        }).ToArray();
        return new ElementwiseChainExecutor(inputs, steps, [.. scales], result, [.. members.Where(i => i != result)]);

        ElementwiseChain.Step AddScale(ChannelScale c, ChannelScaleModule module)
        {
            scales.Add(module);
            return new ElementwiseChain.Step(ElementwiseChain.Operation.ChannelScale, Operand(c.Source), Factors: scales.Count - 1);
        }
    }

    public Tensor? TryRun(Tensor[] values, Workspace? workspace)
    {
        if (is_grad_enabled()) return null;
        var first = values[inputs[0]];
        if (first.dim() != 3 || first.device.type != DeviceType.CPU || first.dtype is not (ScalarType.Float32 or ScalarType.Float64)) return null;
        foreach (var i in inputs)
            if (values[i].device.type != DeviceType.CPU || values[i].dtype != first.dtype || !values[i].shape.SequenceEqual(first.shape)) return null;
        if (scales.Any(s => s.Factors.dtype != first.dtype || s.Factors.device.type != DeviceType.CPU)) return null;
        using var scope = NewDisposeScope();
        var operands = inputs.Select(i => values[i].contiguous()).ToArray();
        var factors = scales.Select(s => s.Factors.contiguous()).ToArray();
        var y = LargeTensors.EmptyLike(operands[0]);
        long rows = first.shape[0] * first.shape[1];
        var width = (int)first.shape[2];
        using (RawStorage.KeepAlive([.. operands, .. factors, y]))
        {
            if (first.dtype == ScalarType.Float32) Run<float>(operands, factors, y, rows, width);
            else Run<double>(operands, factors, y, rows, width);
        }
        return y.MoveToOuterDisposeScope();
    }

    private unsafe void Run<T>(Tensor[] operands, Tensor[] factors, Tensor y, long rows, int width) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var inputPointers = operands.Select(o => (nint)RawStorage.Pointer<T>(o)).ToArray();
        var factorPointers = factors.Select(f => (nint)RawStorage.Pointer<T>(f)).ToArray();
        ElementwiseChain.Forward(inputPointers, factorPointers, steps, RawStorage.Pointer<T>(y), rows, width);
    }
}
