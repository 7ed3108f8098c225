using Duality.Ir;
using Duality.Torch;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// How a compiled graph runs, decided when it is compiled: the groups of nodes that run as one kernel when they can
/// (<see cref="IFusedExecutor"/>s: structure-aware gated layers, gates feeding a recurrence) and the nodes that always run
/// by themselves. A group whose conditions fail on a call (gradients recorded, another device, weights without the
/// structure it needs) runs its nodes one by one on that call. Groups that read the weights' structure re-read it when
/// the weights change (a hash of their bits, one pass at memory speed) or when <see cref="Replan"/> says so.
/// </summary>
internal sealed class ExecutionPlan
{
    private readonly Graph graph;
    private readonly IReadOnlyList<(IFusedExecutor Executor, FusedGroup Group)> groups;
    private readonly ILookup<int, (IFusedExecutor Executor, FusedGroup Group)> byTrigger;

    public ExecutionPlan(Graph graph, NodeModule?[] modules, ExecutionMode execution)
    {
        this.graph = graph;
        IEnumerable<IFusedExecutor> executors = execution == ExecutionMode.Auto
            ? [.. StructureAwareLayerExecutor.For(graph, modules), .. GateIntoRecurrenceExecutor.For(graph, modules)]
            : [];
        groups = executors.Select(e => (Executor: e, Group: new FusedGroup(graph.Nodes[e.Result].Name, e.Kind,
            [.. e.Interior.Order().Select(i => graph.Nodes[i].Name), graph.Nodes[e.Result].Name]))).ToList();
        byTrigger = groups.ToLookup(g => g.Executor.Trigger);
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
    /// </summary>
    public Tensor[] Run(NodeModule?[] modules, Tensor[] inputs, Workspace? buffers)
    {
        var values = new Tensor[modules.Length];
        var fused = Fuse(values, buffers);
        int next = 0;
        for (int i = 0; i < modules.Length; i++)
        {
            if (fused.TryGetValue(i, out var groupOutput)) values[i] = groupOutput;
            else if (fused.ContainsKey(~i)) continue;
            else
                values[i] = modules[i] is { } module
                    ? buffers is not null && buffers.Dies(i)
                        ? module.Forward(graph.Nodes[i].Sources.Select(s => values[s.Index]).ToArray(), buffers.For(i))
                        : module.Forward(graph.Nodes[i].Sources.Select(s => values[s.Index]).ToArray())
                    : inputs[next++];
            fused = Fuse(values, buffers, fused, i);
        }
        return values;
    }

    /// <summary>
    /// Runs each group triggered by node <paramref name="computed"/>: its result is keyed by its node's index, its interior
    /// nodes by their complement (~index) so they are skipped. A group that declines runs node by node; a group whose
    /// nodes another group already took is not run.
    /// </summary>
    private Dictionary<int, Tensor> Fuse(Tensor[] values, Workspace? buffers, Dictionary<int, Tensor>? fused = null, int computed = -1)
    {
        fused ??= [];
        foreach (var (executor, group) in byTrigger[computed])
        {
            if (fused.ContainsKey(executor.Result) || fused.ContainsKey(~executor.Result) || executor.Interior.Any(i => fused.ContainsKey(~i)))
                continue;
            var output = executor.TryRun(values, buffers);
            group.Count(ranFused: output is not null);
            if (output is null) continue;
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
