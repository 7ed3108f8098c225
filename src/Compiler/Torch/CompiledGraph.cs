using Duality.Execution;
using Duality.Ir;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// A graph compiled into a TorchSharp module. <c>forward(x)</c> maps x: [batch, time, features]
/// to the output [batch, time, features'] for graphs with one input and one output;
/// <see cref="Forward(Tensor[])"/> and <see cref="Run"/> take several. Parameters are named by node
/// path ("block1/proj.weight"); <see cref="ToGraph"/> reads their current values back into the graph.
/// </summary>
public sealed class CompiledGraph : nn.Module<Tensor, Tensor>
{
    private readonly NodeModule?[] nodeModules;
    private readonly ILookup<int, (IFusedExecutor Executor, FusedGroup Group)> executorsByTrigger;

    private readonly Workspace? workspace;

    internal CompiledGraph(Graph graph, ScalarType dtype, Device device, ExecutionMode execution, bool reuseBuffers = false) : base("graph")
    {
        Graph = graph;
        DType = dtype;
        Device = device;
        Execution = execution;
        workspace = reuseBuffers ? new Workspace(graph) : null;
        nodeModules = graph.Nodes.Select(n => ModuleFactory.Create(n, dtype, execution)).ToArray();
        foreach (var module in nodeModules)
            if (module is not null) register_module(module.GetName(), module);
        IEnumerable<IFusedExecutor> executors = execution == ExecutionMode.Auto
            ? [.. GatedLayerExecutor.For(graph, nodeModules), .. GatedRecurrenceExecutor.For(graph, nodeModules)]
            : [];
        var groups = executors.Select(e => (Executor: e, Group: new FusedGroup(graph.Nodes[e.Result].Name, e.Kind,
            [.. e.Interior.Order().Select(i => graph.Nodes[i].Name), graph.Nodes[e.Result].Name]))).ToList();
        FusedGroups = groups.Select(g => g.Group).ToList();
        executorsByTrigger = groups.ToLookup(g => g.Executor.Trigger);
        this.to(device);
    }

    /// <summary>The graph as compiled, with the weights the module started from.</summary>
    public Graph Graph { get; }

    public ScalarType DType { get; }

    public Device Device { get; }

    public ExecutionMode Execution { get; }

    /// <summary>
    /// The groups of nodes this module runs as one kernel when it can (<see cref="ExecutionMode.Auto"/>): structure-aware
    /// gated layers, gates feeding a recurrence; each counts the forward passes that ran it fused and node by node.
    /// </summary>
    public IReadOnlyList<FusedGroup> FusedGroups { get; }

    /// <summary>Whether forward passes without gradients keep the tensors of values that die within them (<see cref="CompileOptions.ReuseBuffers"/>).</summary>
    public bool ReuseBuffers => workspace is not null;

    /// <summary>Frees the tensors kept by <see cref="ReuseBuffers"/>; the next forward pass allocates them again.</summary>
    public void ReleaseBuffers()
    {
        if (workspace is null) return;
        lock (workspace) workspace.Dispose();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) ReleaseBuffers();
        base.Dispose(disposing);
    }

    /// <summary>Number of trainable scalars.</summary>
    public long ParameterCount => parameters().Sum(p => p.numel());

    /// <summary>x: [batch, time, features] for a graph with one input and one output.</summary>
    public override Tensor forward(Tensor x)
    {
        if (Graph.Inputs.Count != 1 || Graph.Outputs.Count != 1)
            throw new GraphException(new Diagnostic("wrong call", "(graph)",
                $"{Graph.Inputs.Count} inputs, {Graph.Outputs.Count} outputs",
                "call Forward(inputs...) or Run(named inputs) for graphs with several inputs or outputs"));
        return Forward(x)[0];
    }

    /// <summary>Inputs in the graph's input order; outputs in its output order.</summary>
    public Tensor[] Forward(params Tensor[] inputs)
    {
        InputCheck.Sequences(Graph, inputs, DType, Device);
        // a call running while another holds the buffers (another thread) allocates its own
        var buffers = workspace is not null && !is_grad_enabled() && Monitor.TryEnter(workspace) ? workspace : null;
        try
        {
            return Forward(inputs, buffers);
        }
        finally
        {
            if (buffers is not null) Monitor.Exit(buffers);
        }
    }

    private Tensor[] Forward(Tensor[] inputs, Workspace? buffers)
    {
        var values = new Tensor[nodeModules.Length];
        var fused = Fuse(values, buffers);
        int next = 0;
        for (int i = 0; i < nodeModules.Length; i++)
        {
            if (fused.TryGetValue(i, out var groupOutput)) values[i] = groupOutput;
            else if (fused.ContainsKey(~i)) continue;
            else
                values[i] = nodeModules[i] is { } module
                    ? buffers is not null && buffers.Dies(i)
                        ? module.Forward(Graph.Nodes[i].Sources.Select(s => values[s.Index]).ToArray(), buffers.For(i))
                        : module.Forward(Graph.Nodes[i].Sources.Select(s => values[s.Index]).ToArray())
                    : inputs[next++];
            fused = Fuse(values, buffers, fused, i);
        }
        return Graph.Outputs.Select(o => values[o.Index]).ToArray();
    }

    /// <summary>
    /// Runs each fused group (a structure-aware layer, a gate feeding a recurrence) as soon as its inputs are
    /// known (after node <paramref name="computed"/>): the result is keyed by its node's index, the interior
    /// nodes by their complement (~index) so they are skipped. Groups that decline (weights without the
    /// structure, gradients recorded, another device) run node by node; a group whose nodes another group
    /// already took is not run.
    /// </summary>
    private Dictionary<int, Tensor> Fuse(Tensor[] values, Workspace? buffers, Dictionary<int, Tensor>? fused = null, int computed = -1)
    {
        fused ??= [];
        foreach (var (executor, group) in executorsByTrigger[computed])
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

    /// <summary>Named inputs to named outputs.</summary>
    public IReadOnlyDictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs)
    {
        var ordered = Graph.InputNodes.Select(input => inputs.TryGetValue(input.Name, out var t)
            ? t
            : throw new GraphException(new Diagnostic("missing input", input.Name, input.Describe(),
                $"pass a tensor [batch, time, {input.Features}] named '{input.Name}'"))).ToArray();
        var outputs = Forward(ordered);
        return Graph.Outputs.Select((o, i) => (Graph[o].Name, outputs[i])).ToDictionary(p => p.Name, p => p.Item2);
    }

    /// <summary>The graph with every node's weights replaced by this module's current values.</summary>
    public Graph ToGraph() =>
        Graph.MapNodes(node => nodeModules[Graph.IdOf(node.Name).Index] is { } module ? module.ReadBack(node) : node);

    /// <summary>A streaming form that consumes one time step at a time with explicit state.</summary>
    public StepForm ToStepForm() => new(Graph, nodeModules, DType, Device);

    /// <summary>
    /// An allocation-free streaming form over the module's current weights, in float or double, for
    /// low-latency inference on the CPU (<see cref="Streaming.Streamer{T}"/>). It copies the weights: make
    /// a new one after training.
    /// </summary>
    public Streaming.Streamer<T> ToStreamer<T>(int batch = 1, int capacity = 1024) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T> =>
        Streaming.Streamer.Create<T>(ToGraph(), batch, capacity);
}
