using System.Numerics;
using Duality.Ir;
using Duality.Kernels;
using Duality.Execution;
using Duality.Structure;
using Duality.Torch;

namespace Duality.Streaming;

/// <summary>
/// Runs a graph one token at a time over buffers allocated once: write each input's step
/// ([batch, features] row-major) into <see cref="Input"/>, call <see cref="Step()"/>, read
/// <see cref="Output"/>. Once warm, a step allocates no managed memory (a softmax attention's cache
/// grows by doubling unless its capacity covers the sequence). The weights are copied when the
/// streamer is made; make a new one after training. Gated RNN layers whose output gates are
/// selections (as LowerAttention's full construction builds) or that raise to an attention (its compressed
/// construction) run structure-aware, at the cost of the attention they came from. Not thread-safe: a streamer is one
/// stream's state, and a call made while another runs throws a <see cref="GraphException"/> ("concurrent use").
/// </summary>
public sealed class Streamer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Graph graph;
    private readonly Stepper<T>?[] kernels;
    private readonly Stepper<T>[] inputs, outputs;

    internal Streamer(Graph graph, int batch, int capacity)
    {
        if (batch < 1) throw new ArgumentOutOfRangeException(nameof(batch), batch, "a streamer needs a batch of at least 1");
        Requirements.Check(Requirements.MissingWeights(graph, "a streamer").Concat(Requirements.NonCausalAttention(graph)));
        this.graph = graph;
        Batch = batch;
        kernels = Build(graph, batch, capacity, out var structured);
        StructuredLayers = structured;
        inputs = graph.Inputs.Select(i => kernels[i.Index]!).ToArray();
        outputs = graph.Outputs.Select(o => kernels[o.Index]!).ToArray();
    }

    /// The number of sequences streamed side by side: the rows of every input and output buffer.
    public int Batch { get; }

    /// <summary>How many gated RNN layers run structure-aware (the others node by node).</summary>
    public int StructuredLayers { get; }

    /// <summary>Steps taken since the start or the last <see cref="Reset"/>.</summary>
    public long Steps { get; private set; }

    /// <summary>The buffer of input <paramref name="index"/> (graph input order): [batch, features].</summary>
    public Span<T> Input(int index = 0) => inputs[index].Output;

    /// <summary>Output <paramref name="index"/> of the last step (graph output order): [batch, features'].</summary>
    public ReadOnlySpan<T> Output(int index = 0) => outputs[index].Output;

    /// <summary>Advances every node by one token, reading the input buffers.</summary>
    public void Step()
    {
        Enter();
        try
        {
            Advance();
        }
        finally
        {
            Leave();
        }
    }

    private void Advance()
    {
        foreach (var kernel in kernels) kernel?.Step();
        Steps++;
    }

    // 1 while a call runs: a second call meanwhile (another thread) is refused instead of corrupting the state
    private int busy;

    private void Enter()
    {
        if (Interlocked.Exchange(ref busy, 1) != 0)
            throw new GraphException(new Diagnostic("concurrent use", "(streamer)", $"Streamer<{typeof(T).Name}> of {graph.Nodes.Count} nodes",
                "a streamer holds the state of one stream and is not thread-safe: make one streamer per thread (compiled.ToStreamer or Streamer.Create)"));
    }

    private void Leave() => Volatile.Write(ref busy, 0);

    /// <summary>One step of a graph with one input and one output: x: [batch, features] -> [batch, features'].</summary>
    public ReadOnlySpan<T> Step(ReadOnlySpan<T> x)
    {
        if (inputs.Length != 1 || outputs.Length != 1)
            throw new GraphException(new Diagnostic("wrong call", "(graph)", $"{inputs.Length} inputs, {outputs.Length} outputs",
                "write each input into Input(i), call Step(), read Output(i)"));
        if (x.Length != inputs[0].Output.Length)
        {
            var input = graph.InputNodes.First();
            throw new ArgumentException($"input '{input.Name}' takes [batch {Batch}, features {input.Features}] = {inputs[0].Output.Length} values per step, got {x.Length}",
                nameof(x));
        }
        Enter();
        try
        {
            x.CopyTo(inputs[0].Output);
            Advance();
        }
        finally
        {
            Leave();
        }
        return outputs[0].Output;
    }

    /// <summary>Back to the initial state (the state before the first step).</summary>
    public void Reset()
    {
        Enter();
        try
        {
            foreach (var kernel in kernels) kernel?.Reset();
            Steps = 0;
        }
        finally
        {
            Leave();
        }
    }

    private static Stepper<T>?[] Build(Graph graph, int batch, int capacity, out int structured)
    {
        var kernels = new Stepper<T>?[graph.Nodes.Count];
        var layers = StructuredKernels(graph).ToDictionary(l => l.Layer.Ids.Readout.Index);
        structured = layers.Count;
        var interior = layers.Values.SelectMany(l => l.Layer.Interior).Select(n => n.Index).ToHashSet();
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            if (interior.Contains(i)) continue;
            var node = graph.Nodes[i];
            kernels[i] = layers.TryGetValue(i, out var layer)
                ? layer.Stepper(kernels[layer.Layer.Source.Index]!, batch)
                : NodeExecutions.For(node).Stepper(node, node.Sources.Select(s => kernels[s.Index]!).ToArray(), batch, capacity);
        }
        return kernels;
    }

    /// <summary>
    /// The gated RNN layers that run structure-aware, each with its kernel given the kernel of its input: those whose weights
    /// have the selection structure (complex eigenvalues only in lowered heads), and those that raise to an attention
    /// (the compressed construction; only exact zeros counting as zero), run as that attention.
    /// </summary>
    private static IEnumerable<(GatedLayer Layer, Func<Stepper<T>, int, Stepper<T>> Stepper)> StructuredKernels(Graph graph)
    {
        foreach (var layer in GatedLayers.In(graph))
        {
            var structure = SelectionStructure.Of(layer);
            var layout = structure is null ? null : new GatedLayerLayout<T>(SelectionPlans.Of(structure));
            if (layout is { Supported: true })
                yield return (layer, (source, batch) =>
                    new GatedLayerStepper<T>(structure!, layout, layer.Input.Activation, source, batch, layer.Readout.OutFeatures));
            else if (AttentionForm.Of(layer).Attention is { } attention)
                yield return (layer, (source, batch) => new LinearAttentionStepper<T>(attention, source, batch));
        }
    }
}

/// <summary>Makes streamers from graphs that carry weights.</summary>
public static class Streamer
{
    /// <summary>
    /// A streamer for <paramref name="graph"/> (every node must carry weights: InitializeWeights.Run, or
    /// compiled.ToGraph()). <paramref name="capacity"/>: tokens a softmax attention caches before it grows.
    /// </summary>
    public static Streamer<T> Create<T>(Graph graph, int batch = 1, int capacity = 1024) where T : unmanaged, IFloatingPointIeee754<T> =>
        new(graph, batch, capacity);
}
