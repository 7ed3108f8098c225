using Duality.Ir;

namespace Duality.Structure;

/// <summary>
/// A gated-RNN layer of the paper's form, found in a graph by its shape (whatever its weights):
///
///   u = InputValue(x) * phi(InputKey(x))            Input gate, phi its activation
///   h_t = lambda * h_{t-1} + u_t                    Recurrence (diagonal)
///   y = Readout(OutputValue(h) * OutputQuery(h))    Output gate, bias-free projections
///
/// each node read only by the next. With an input-dependent decay (<see cref="Decay"/>), the state is the split form
/// LowerAttention builds: the first neurons recur in a recurrence whose decay is sigmoid(P x + p), the others in
/// <see cref="Recurrence"/>, joined by a Concat. Every node is named by its role, never by its position.
/// </summary>
internal sealed record GatedLayer(NodeId Source, Projection InputValue, Projection InputKey, Gate Input, LinearRecurrence Recurrence,
    Projection OutputValue, Projection OutputQuery, Gate Output, Projection Readout, GatedLayer.Roles Ids, DecaySplit? Decay = null)
{
    /// <summary>The node of each role.</summary>
    internal sealed record Roles(NodeId InputValue, NodeId InputKey, NodeId Input, NodeId Recurrence, NodeId OutputValue, NodeId OutputQuery,
        NodeId Output, NodeId Readout);

    /// <summary>Recurrent neurons: the input gate's width.</summary>
    public int Neurons => (Decay?.Memory.Width ?? 0) + Recurrence.Width;

    /// <summary>Every node the layer computes before its readout (the nodes a fused run replaces).</summary>
    public IReadOnlyList<NodeId> Interior =>
    [
        Ids.InputValue, Ids.InputKey, Ids.Input, Ids.Recurrence, Ids.OutputValue, Ids.OutputQuery, Ids.Output,
        .. Decay is { } split ? new[] { split.MemorySlice, split.QuerySlice, split.ProjectionId, split.MemoryId, split.State } : [],
    ];

    /// <summary>
    /// Each neuron's eigenvalue (re, im): the neurons with an input-dependent decay come first, 1 standing in for
    /// their eigenvalue, then those of <see cref="Recurrence"/>.
    /// </summary>
    public (double Re, double Im)[] Eigenvalues()
    {
        var (lambda, complex) = (Recurrence.Lambda!, Recurrence.State == StateKind.Complex);
        return [.. Enumerable.Repeat((1.0, 0.0), Decay?.Memory.Width ?? 0),
            .. Enumerable.Range(0, Recurrence.Width).Select(i => complex ? (lambda[i, 0], lambda[i, 1]) : (lambda[i], 0.0))];
    }

    /// <summary>Every projection of the layer, the decay's included.</summary>
    public IEnumerable<Projection> Projections =>
        new[] { InputValue, InputKey, OutputValue, OutputQuery, Readout, Decay?.Projection }.OfType<Projection>();

    /// <summary>The same layer with each node replaced by <paramref name="current"/>(node), for example with weights read back from a module.</summary>
    public GatedLayer WithNodes(Func<Node, Node> current) => this with
    {
        InputValue = (Projection)current(InputValue),
        InputKey = (Projection)current(InputKey),
        Recurrence = (LinearRecurrence)current(Recurrence),
        OutputValue = (Projection)current(OutputValue),
        OutputQuery = (Projection)current(OutputQuery),
        Readout = (Projection)current(Readout),
        Decay = Decay is { } split ? split with { Projection = (Projection)current(split.Projection) } : null,
    };
}

/// <summary>
/// The state of a layer with an input-dependent decay: the input gate's first Memory.Width neurons (Slice
/// <see cref="MemorySlice"/>) recur in <see cref="Memory"/>, whose decay is sigmoid of <see cref="Projection"/> (of the
/// layer's input), the others (Slice <see cref="QuerySlice"/>) in the layer's Recurrence, and Concat <see cref="State"/>
/// joins them in that order.
/// </summary>
internal sealed record DecaySplit(LinearRecurrence Memory, NodeId MemoryId, Projection Projection, NodeId ProjectionId,
    NodeId MemorySlice, NodeId QuerySlice, NodeId State);

/// <summary>Why a recurrence is not the middle of a gated layer, and what would make it one.</summary>
internal readonly record struct Mismatch(string Reason, string Hint);

/// <summary>Finds <see cref="GatedLayer"/>s in a graph.</summary>
internal static class GatedLayers
{
    /// <summary>Every gated layer of the graph: around a recurrence of fixed eigenvalues, or the split form of an input-dependent decay.</summary>
    public static IEnumerable<GatedLayer> In(Graph graph)
    {
        var readers = Readers(graph);
        for (int i = 0; i < graph.Nodes.Count; i++)
            if (graph.Nodes[i] is LinearRecurrence && Around(graph, new NodeId(i), readers).Layer is { } layer)
                yield return layer;
    }

    /// <summary>How many nodes read each node, a graph output counting as a reader.</summary>
    public static int[] Readers(Graph graph)
    {
        var readers = new int[graph.Nodes.Count];
        foreach (var node in graph.Nodes) foreach (var s in node.Sources) readers[s.Index]++;
        foreach (var o in graph.Outputs) readers[o.Index]++;
        return readers;
    }

    /// <summary>The layer around a recurrence: the paper's form for fixed eigenvalues, the split form for an input-dependent decay.</summary>
    public static (GatedLayer? Layer, Mismatch Why) Around(Graph g, NodeId recurrenceId, int[] readers) =>
        ((LinearRecurrence)g[recurrenceId]).Decay is null ? Fixed(g, recurrenceId, readers)
        : Split(g, recurrenceId, readers) is { } split ? (split, default) : (null, SplitShape);

    private static readonly Mismatch Shape = new(
        "the recurrence is not the middle of input gate (two projections of one sequence) -> recurrence -> output gate (two bias-free projections of it) -> bias-free readout, each read only by the next",
        "write the layer in exactly that shape (as LowerAttention does) to raise it");

    private static readonly Mismatch SplitShape = new(
        "its decay is input-dependent, and the layer is not the split form LowerAttention builds: input gate -> Slice [0, m) -> this recurrence (decay sigmoid(P x)) and Slice [m, n) -> a recurrence of fixed eigenvalues, joined by a Concat, then output gate and readout",
        "write the layer in exactly that shape (as LowerAttention does) to raise it");

    private static (GatedLayer?, Mismatch) Fixed(Graph g, NodeId recurrenceId, int[] readers)
    {
        var recurrence = (LinearRecurrence)g[recurrenceId];
        if (recurrence.Lambda is null || recurrence.InitialState is not null || recurrence.ComplexInput || recurrence.NormalisedInput
            || (recurrence.State == StateKind.Complex && recurrence.Readout != ComplexReadout.RealPart))
            return (null, new("its eigenvalues are unknown, its initial state is not zero, it reads out [re; im], or its input is complex or normalised",
                "give lambda values, a zero initial state, a real input and a real-part readout"));
        if (g[recurrence.Source] is not Gate || readers[recurrence.Source.Index] != 1)
            return (null, Shape);
        return Ends(g, recurrence.Source, recurrence, recurrenceId, recurrenceId, readers) is { } layer ? (layer, default) : (null, Shape);
    }

    /// <summary>
    /// The split form of an input-dependent decay, anchored on its memory recurrence: input gate -> Slice [0, m) ->
    /// recurrence with decay sigmoid(P x), and Slice [m, n) -> recurrence with fixed real eigenvalues, joined by a
    /// Concat in that order, which the output gate reads; null for anything else.
    /// </summary>
    private static GatedLayer? Split(Graph g, NodeId memoryId, int[] readers)
    {
        var memory = (LinearRecurrence)g[memoryId];
        if (memory.State != StateKind.Real || memory.DecayForm != DecayForm.Sigmoid || memory.NormalisedInput || memory.InitialState is not null || readers[memoryId.Index] != 1
            || g[memory.Decay!.Value] is not Projection decay || readers[memory.Decay.Value.Index] != 1
            || (decay.OutFeatures != memory.Width && decay.OutFeatures != 1)
            || g[memory.Source] is not Slice { Start: 0 } memorySlice || readers[memory.Source.Index] != 1
            || g[memorySlice.Source] is not Gate || readers[memorySlice.Source.Index] != 2)
            return null;
        var nodes = g.Nodes.Select((n, i) => (Node: n, Id: new NodeId(i))).ToList();
        var querySlice = nodes.FirstOrDefault(p => p.Node is Slice s && s.Source == memorySlice.Source && p.Id != memory.Source);
        if (querySlice.Node is not Slice { } slice || slice.Start != memory.Width || readers[querySlice.Id.Index] != 1) return null;
        var query = nodes.FirstOrDefault(p => p.Node.Sources.Contains(querySlice.Id));
        if (query.Node is not LinearRecurrence { State: StateKind.Real, Decay: null, InitialState: null, NormalisedInput: false } recurrence
            || recurrence.Lambda is null || readers[query.Id.Index] != 1)
            return null;
        var state = nodes.FirstOrDefault(p => p.Node is Concat c && c.Parts.Count == 2 && c.Parts[0] == memoryId && c.Parts[1] == query.Id);
        if (state.Node is null || Ends(g, memorySlice.Source, recurrence, query.Id, state.Id, readers) is not { } layer
            || decay.Source != layer.Source || layer.InputValue.OutFeatures != memory.Width + recurrence.Width)
            return null;
        return layer with { Decay = new DecaySplit(memory, memoryId, decay, memory.Decay.Value, memory.Source, querySlice.Id, state.Id) };
    }

    /// <summary>
    /// The layer around its state: the input gate <paramref name="inputId"/> (two projections of one sequence) and the
    /// node holding the state, read by an output gate of two bias-free projections and a bias-free readout, each read only by the next.
    /// </summary>
    private static GatedLayer? Ends(Graph g, NodeId inputId, LinearRecurrence recurrence, NodeId recurrenceId, NodeId stateId, int[] readers)
    {
        var input = (Gate)g[inputId];
        if (g[input.Value] is not Projection inputValue || g[input.Gating] is not Projection inputKey
            || inputValue.Source != inputKey.Source || readers[input.Value.Index] != 1 || readers[input.Gating.Index] != 1
            || input.Value == input.Gating)
            return null;
        var stateReaders = g.Nodes.Select((n, i) => (n, Id: new NodeId(i))).Where(p => p.n.Sources.Contains(stateId)).ToList();
        if (stateReaders.Count != 2 || readers[stateId.Index] != 2) return null;
        var gate = g.Nodes.Select((n, i) => (n, Id: new NodeId(i)))
            .FirstOrDefault(p => p.n is Gate gt && (gt.Value == stateReaders[0].Id && gt.Gating == stateReaders[1].Id
                                                    || gt.Value == stateReaders[1].Id && gt.Gating == stateReaders[0].Id));
        if (gate.n is not Gate output || output.Activation != ActivationKind.Identity
            || g[output.Value] is not Projection { Bias: false } outputValue || g[output.Gating] is not Projection { Bias: false } outputQuery
            || readers[output.Value.Index] != 1 || readers[output.Gating.Index] != 1 || readers[gate.Id.Index] != 1)
            return null;
        var readout = g.Nodes.Select((n, i) => (n, Id: new NodeId(i))).First(p => p.n.Sources.Contains(gate.Id));
        if (readout.n is not Projection { Bias: false } readoutNode) return null;
        var ids = new GatedLayer.Roles(input.Value, input.Gating, inputId, recurrenceId, output.Value, output.Gating, gate.Id, readout.Id);
        return new GatedLayer(inputValue.Source, inputValue, inputKey, input, recurrence, outputValue, outputQuery, output, readoutNode, ids);
    }
}
