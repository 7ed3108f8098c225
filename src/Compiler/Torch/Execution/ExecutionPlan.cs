using Duality.Ir;
using Duality.Torch;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// How a compiled graph runs, decided when it is compiled: the groups of nodes that run as one kernel when they can
/// (<see cref="IFusedExecutor"/>s: structure-aware gated layers, gates feeding a recurrence, attention reading shared slices,
/// a projection with a scaled skip, elementwise chains) and the nodes that always run
/// by themselves. A group whose conditions fail on a call (gradients recorded, another device, weights without the
/// structure it needs) runs its nodes one by one on that call. Groups that read the weights' structure re-read it when
/// the weights change (a hash of their bits, one pass at memory speed) or when <see cref="Replan"/> says so.
/// </summary>
internal sealed class ExecutionPlan
{
    private readonly Graph graph;
    private readonly IReadOnlyList<(IFusedExecutor Executor, FusedGroup Group)> groups;
    private readonly ILookup<int, (IFusedExecutor Executor, FusedGroup Group)> byTrigger;
    // nodes of a group that come before its trigger: they wait for it
    private readonly HashSet<int> deferred;
    // for an input node (no module), its place among the graph's inputs
    private readonly int[] inputOrder;

    public ExecutionPlan(Graph graph, NodeModule?[] modules, ExecutionMode execution)
    {
        this.graph = graph;
        List<IFusedExecutor> executors = execution == ExecutionMode.Auto
            ? [.. StructureAwareLayerExecutor.For(graph, modules), .. GateIntoRecurrenceExecutor.For(graph, modules),
               .. SharedSliceAttentionExecutor.For(graph, modules), .. ProjectionSkipExecutor.For(graph, modules)]
            : [];
        // elementwise chains among the nodes no other group takes
        if (execution == ExecutionMode.Auto)
            executors.AddRange(ElementwiseChainExecutor.For(graph, modules, executors.SelectMany(e => e.Interior.Append(e.Result)).ToHashSet()));
        groups = executors.Select(e => (Executor: e, Group: new FusedGroup(graph.Nodes[e.Result].Name, e.Kind,
            [.. e.Interior.Order().Select(i => graph.Nodes[i].Name), graph.Nodes[e.Result].Name]))).ToList();
        byTrigger = groups.ToLookup(g => g.Executor.Trigger);
        deferred = groups.SelectMany(g => g.Executor.Interior.Where(i => i < g.Executor.Trigger)).ToHashSet();
        inputOrder = new int[modules.Length];
        for (int i = 0, next = 0; i < modules.Length; i++) if (modules[i] is null) inputOrder[i] = next++;
    }

    public IReadOnlyList<FusedGroup> Groups => groups.Select(g => g.Group).ToList();

    /// <summary>Forgets what every group read from the weights: the next call reads their structure again.</summary>
    public void Replan()
    {
        foreach (var (executor, _) in groups) executor.Forget();
    }

    /// <summary>
    /// Every node's value for one forward pass: fused groups run as soon as their inputs are known, nodes they cover are
    /// skipped, and every other node runs its module (writing into kept buffers when <paramref name="buffers"/> allows).
    /// A group's nodes that come before its trigger wait for it, and run then if it declines.
    /// </summary>
    public Tensor[] Run(NodeModule?[] modules, Tensor[] inputs, Workspace? buffers)
    {
        var values = new Tensor[modules.Length];
        void Compute(int i) =>
            values[i] = modules[i] is { } module
                ? buffers is not null && buffers.Dies(i)
                    ? module.Forward(graph.Nodes[i].Sources.Select(s => values[s.Index]).ToArray(), buffers.For(i))
                    : module.Forward(graph.Nodes[i].Sources.Select(s => values[s.Index]).ToArray())
                : inputs[inputOrder[i]];
        var fused = Fuse(values, buffers, Compute);
        for (int i = 0; i < modules.Length; i++)
        {
            if (fused.TryGetValue(i, out var groupOutput)) values[i] = groupOutput;
            else if (fused.ContainsKey(~i) || deferred.Contains(i)) continue;
            else Compute(i);
            fused = Fuse(values, buffers, Compute, fused, i);
        }
        return values;
    }

    /// <summary>
    /// Runs each group triggered by node <paramref name="computed"/>: its result is keyed by its node's index, its interior
    /// nodes by their complement (~index) so they are skipped. A group that declines runs node by node (its nodes before
    /// the trigger now, the rest in turn); a group whose nodes another group already took is not run.
    /// </summary>
    private Dictionary<int, Tensor> Fuse(Tensor[] values, Workspace? buffers, Action<int> compute, Dictionary<int, Tensor>? fused = null,
        int computed = -1)
    {
        fused ??= [];
        foreach (var (executor, group) in byTrigger[computed])
        {
            var taken = fused.ContainsKey(executor.Result) || fused.ContainsKey(~executor.Result) || executor.Interior.Any(i => fused.ContainsKey(~i));
            var output = taken ? null : executor.TryRun(values, buffers);
            if (!taken) group.Count(ranFused: output is not null);
            if (output is null)
            {
                foreach (var early in executor.Interior.Where(i => i < executor.Trigger && values[i] is null && !fused.ContainsKey(~i)).Order())
                    compute(early);
                continue;
            }
            fused[executor.Result] = output;
            foreach (var interior in executor.Interior) fused[~interior] = output;
        }
        return fused;
    }

    /// <summary>One line per group (its kind and nodes), then the nodes that run by themselves.</summary>
    public override string ToString()
    {
        var covered = groups.SelectMany(g => g.Group.Nodes).ToHashSet();
        var alone = graph.Nodes.Where(n => n is not Input && !covered.Contains(n.Name)).Select(n => n.Name).ToList();
        var lines = groups.Select(g => $"group {g.Group.Node}: {g.Group.Kind} ({string.Join(", ", g.Group.Nodes)})").ToList();
        lines.Add(alone.Count == 0 ? "every node in a group" : $"node by node: {string.Join(", ", alone)}");
        return string.Join(Environment.NewLine, lines);
    }
}
