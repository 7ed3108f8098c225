using System.Collections.Immutable;
using Duality.Ir;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>The state of every stateful node between two steps. Immutable: a step returns a new one.</summary>
public sealed class StepState
{
    internal StepState(ImmutableArray<Tensor[]> perNode, long batch, long steps, object owner)
    {
        PerNode = perNode;
        Owner = owner;
        Batch = batch;
        Steps = steps;
    }

    internal ImmutableArray<Tensor[]> PerNode { get; }

    /// <summary>The modules whose state this is (every step form of one compiled graph shares them).</summary>
    internal object Owner { get; }

    /// The batch size the state was made for; every x_t stepped with it has this many rows.
    public long Batch { get; }

    /// <summary>How many steps produced this state.</summary>
    public long Steps { get; }
}

/// <summary>
/// Runs a compiled graph one time step at a time: x_t: [batch, features] -> y_t: [batch, features'].
/// Shares its parameters with the module it came from; the same inputs give the same outputs as
/// the full-sequence form.
/// </summary>
public sealed class StepForm
{
    private readonly Graph graph;
    private readonly NodeModule?[] nodeModules;
    private readonly ScalarType dtype;
    private readonly Device device;

    internal StepForm(Graph graph, NodeModule?[] nodeModules, ScalarType dtype, Device device)
    {
        Requirements.Check(Requirements.NonCausalAttention(graph));
        this.graph = graph;
        this.nodeModules = nodeModules;
        this.dtype = dtype;
        this.device = device;
    }

    /// The state before the first step for <paramref name="batch"/> sequences: every recurrence at its initial state
    /// (zero unless the node gives one), every attention with nothing seen.
    /// <exception cref="GraphException"><paramref name="batch"/> is negative.</exception>
    public StepState InitialState(long batch) =>
        batch >= 0
            ? new(nodeModules.Select(m => m is { IsStateful: true } ? m.InitialState(batch) : []).ToImmutableArray(), batch, 0, nodeModules)
            : throw new GraphException(new Diagnostic("invalid batch", "(graph)", "step form", "give a batch size of 0 or more",
                Received: $"batch {batch}"));

    /// <summary>One step for a graph with one input and one output; x: [batch, features].</summary>
    public (Tensor Output, StepState State) Step(Tensor x, StepState state)
    {
        var (outputs, next) = Step([x], state);
        return (outputs[0], next);
    }

    /// <summary>One step; inputs [batch, features] in the graph's input order.</summary>
    public (Tensor[] Outputs, StepState State) Step(Tensor[] inputs, StepState state)
    {
        if (state is null || !ReferenceEquals(state.Owner, nodeModules))
            throw new GraphException(new Diagnostic("wrong state", "(graph)", "step form",
                "pass the state this module's InitialState(batch) made, or the one its previous Step returned",
                Received: state is null ? "null" : "the state of another compiled module"));
        InputCheck.Steps(graph, inputs, dtype, device, state.Batch);
        // every intermediate belongs to the scope until the step returns: a temporary whose managed wrapper nothing else
        // holds could otherwise be finalised (its native tensor freed) while a native call still reads it
        using var scope = NewDisposeScope();
        var values = new Tensor[nodeModules.Length];
        var states = state.PerNode.ToBuilder();
        int next = 0;
        for (int i = 0; i < nodeModules.Length; i++)
        {
            if (nodeModules[i] is not { } module)
            {
                values[i] = inputs[next++].unsqueeze(1);
                continue;
            }
            var sources = graph.Nodes[i].Sources.Select(s => values[s.Index]).ToArray();
            if (module.IsStateful)
            {
                var (output, nodeState) = module.Step(sources, states[i]);
                values[i] = output;
                states[i] = nodeState;
            }
            else values[i] = module.Forward(sources);
        }
        var outputs = graph.Outputs.Select(o => values[o.Index].squeeze(1)).ToArray();
        // the outputs and the new state outlive the step (a tensor of the caller's, such as an unchanged state, stays theirs)
        scope.MoveToOuter(outputs.Concat(states.SelectMany(s => s)));
        GC.KeepAlive(inputs);
        return (outputs, new StepState(states.MoveToImmutable(), state.Batch, state.Steps + 1, nodeModules));
    }

    /// <summary>Runs the steps over a whole sequence x: [batch, time, features]; returns [batch, time, features'].</summary>
    public Tensor Unroll(Tensor x) => Unroll([x])[0];

    /// <summary>
    /// Runs the steps over whole sequences [batch, time, features] (the graph's inputs, in order); returns its outputs.
    /// Zero steps give empty outputs [batch, 0, features'].
    /// </summary>
    public Tensor[] Unroll(Tensor[] inputs)
    {
        InputCheck.Sequences(graph, inputs, dtype, device);
        var (batch, time) = (inputs[0].shape[0], inputs[0].shape[1]);
        if (time == 0)
            return graph.Outputs.Select(o => zeros(batch, 0, graph.WidthOf(o), dtype: dtype, device: device)).ToArray();
        using var scope = NewDisposeScope();
        var state = InitialState(batch);
        var steps = new Tensor[inputs[0].shape[1]][];
        for (int t = 0; t < steps.Length; t++) (steps[t], state) = Step(inputs.Select(x => x.select(1, t)).ToArray(), state);
        var outputs = Enumerable.Range(0, graph.Outputs.Count).Select(o => stack(steps.Select(step => step[o]), 1)).ToArray();
        scope.MoveToOuter(outputs);
        GC.KeepAlive(inputs);
        return outputs;
    }
}
