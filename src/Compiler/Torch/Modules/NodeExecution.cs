using System.Numerics;
using System.Reflection;
using Duality.Ir;
using Duality.Streaming;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// How one node kind runs: its TorchSharp module (for compiled graphs and the tensor step form), its step kernel over
/// spans (for the <see cref="Streamer{T}"/>), and whether its module may return a view of an input (whose buffer then
/// must outlive the output). One subclass per kind, beside the kind's module; <see cref="NodeExecutions"/> finds them.
/// </summary>
internal abstract class NodeExecution
{
    public abstract Type Kind { get; }

    /// <summary>The module computing the node ([batch, time, features] in and out); null for an input.</summary>
    public abstract NodeModule? Module(Node node, ScalarType dtype, ExecutionMode execution);

    /// <summary>The node advanced one token at a time over preallocated buffers, reading its sources' kernels.</summary>
    public abstract Stepper<T> Stepper<T>(Node node, Stepper<T>[] sources, int batch, int capacity)
        where T : unmanaged, IFloatingPointIeee754<T>;

    /// <summary>Whether the node's module may return a view of (or the same storage as) one of its inputs.</summary>
    public virtual bool ReturnsView(Node node) => false;
}

/// <summary>A <see cref="NodeExecution"/> for node kind <typeparamref name="TNode"/>.</summary>
internal abstract class NodeExecution<TNode> : NodeExecution where TNode : Node
{
    public sealed override Type Kind => typeof(TNode);

    public sealed override NodeModule? Module(Node node, ScalarType dtype, ExecutionMode execution) => Module((TNode)node, dtype, execution);

    public sealed override Stepper<T> Stepper<T>(Node node, Stepper<T>[] sources, int batch, int capacity) =>
        Stepper((TNode)node, sources, batch, capacity);

    public sealed override bool ReturnsView(Node node) => ReturnsView((TNode)node);

    protected abstract NodeModule? Module(TNode node, ScalarType dtype, ExecutionMode execution);

    protected abstract Stepper<T> Stepper<T>(TNode node, Stepper<T>[] sources, int batch, int capacity)
        where T : unmanaged, IFloatingPointIeee754<T>;

    protected virtual bool ReturnsView(TNode node) => false;
}

/// <summary>Every node kind's <see cref="NodeExecution"/>, found once by reflection; a kind without one is named in the error.</summary>
internal static class NodeExecutions
{
    private static readonly Dictionary<Type, NodeExecution> byKind = typeof(NodeExecution).Assembly.GetTypes()
        .Where(t => !t.IsAbstract && t.IsSubclassOf(typeof(NodeExecution)))
        .Select(t => (NodeExecution)Activator.CreateInstance(t, nonPublic: true)!)
        .ToDictionary(e => e.Kind);

    /// <summary>The node kinds that have an execution.</summary>
    public static IReadOnlyCollection<Type> Kinds => byKind.Keys;

    public static NodeExecution For(Node node) =>
        byKind.TryGetValue(node.GetType(), out var execution)
            ? execution
            : throw new GraphException(new Diagnostic("no module", node.Name, node.Describe(),
                $"bug in the compiler: node kind {node.GetType().Name} has no NodeExecution; add one beside its module"));
}

/// <summary>Inputs have no module; their step kernel holds the values the caller writes.</summary>
internal sealed class InputExecution : NodeExecution<Input>
{
    protected override NodeModule? Module(Input node, ScalarType dtype, ExecutionMode execution) => null;

    protected override Stepper<T> Stepper<T>(Input node, Stepper<T>[] sources, int batch, int capacity) =>
        new InputStepper<T>(batch, node.Features);
}
