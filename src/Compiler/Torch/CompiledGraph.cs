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
    private readonly ExecutionPlan plan;

    private readonly Workspace? workspace;

    internal CompiledGraph(Graph graph, ScalarType dtype, Device device, ExecutionMode execution, bool reuseBuffers = false) : base("graph")
    {
        Graph = graph;
        DType = dtype;
        Device = device;
        Execution = execution;
        nodeModules = graph.Nodes.Select(n => NodeExecutions.For(n).Module(n, dtype, execution)).ToArray();
        workspace = reuseBuffers ? new Workspace(graph) : null;
        foreach (var module in nodeModules)
            if (module is not null) register_module(module.GetName(), module);
        plan = new ExecutionPlan(graph, nodeModules, execution);
        FusedGroups = plan.Groups;
        this.to(device);
    }

    /// <summary>The graph as compiled, with the weights the module started from.</summary>
    public Graph Graph { get; }

    /// The element type of the parameters; inputs must have it too.
    public ScalarType DType { get; }

    /// The device the module was compiled for; inputs must be on it.
    public Device Device { get; }

    /// The execution mode the module was compiled with (<see cref="CompileOptions.Execution"/>).
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

    /// Releases the kept buffers (<see cref="ReleaseBuffers"/>) and the module's parameters.
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

    /// <summary>
    /// The outputs, every intermediate tensor released when the call returns (autograd keeps what backward needs): without
    /// this, a script calling the model in a loop leaves intermediates to the garbage collector, and fresh pages for every
    /// new one cost more than the computation.
    /// </summary>
    private Tensor[] Forward(Tensor[] inputs, Workspace? buffers)
    {
        using var scope = NewDisposeScope();
        var values = plan.Run(nodeModules, inputs, buffers);
        var outputs = Graph.Outputs.Select(o => values[o.Index]).ToArray();
        // an output may be an input itself (an identity graph): that one belongs to the caller already
        foreach (var output in outputs.Distinct().Where(o => !inputs.Any(i => ReferenceEquals(i, o)))) scope.MoveToOuter(output);
        // the caller's tensors too stay reachable until every native call reading them has returned (an input made in the
        // call's own argument list has no other holder)
        GC.KeepAlive(inputs);
        return outputs;
    }

    /// <summary>
    /// The execution plan, one line per fused group and then the nodes that run by themselves (decided when compiling;
    /// <see cref="FusedGroups"/> counts how each group ran).
    /// </summary>
    public string Plan => plan.ToString();

    /// <summary>
    /// Makes groups that read the structure of the weights read it again on the next call. Not needed after training or
    /// edits through TorchSharp: a change of the weights' bits is noticed by itself.
    /// </summary>
    public void Replan() => plan.Replan();

    /// <summary>Named inputs to named outputs.</summary>
    public IReadOnlyDictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs)
    {
        if (inputs is null)
            throw new GraphException(new Diagnostic("missing input", "(graph)", $"{Graph.Inputs.Count} inputs",
                $"pass a dictionary with a tensor for each of: {string.Join(", ", Graph.InputNodes.Select(i => i.Name))}", Received: "null"));
        var ordered = Graph.InputNodes.Select(input => inputs.TryGetValue(input.Name, out var t)
            ? t
            : throw new GraphException(new Diagnostic("missing input", input.Name, input.Describe(),
                $"pass a tensor [batch, time, {input.Features}] named '{input.Name}'"))).ToArray();
        var outputs = Forward(ordered);
        return Graph.Outputs.Select((o, i) => (Graph[o].Name, outputs[i])).ToDictionary(p => p.Name, p => p.Item2);
    }

    /// <summary>The graph with every node's weights replaced by this module's current values.</summary>
    public Graph ToGraph()
    {
        using var scope = NewDisposeScope();
        return Graph.MapNodes(node => nodeModules[Graph.IdOf(node.Name).Index] is { } module ? module.ReadBack(node) : node);
    }

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
