using Duality.Ir;
using Duality.Kernels;
using Duality.Passes;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// A Gate read only by a real diagonal recurrence with fixed or trainable eigenvalues:
///   h_t = lambda * h_{t-1} + value_t * f(gate_t)
/// run as one fused pass (<see cref="GatedScan"/>) without gradients on the CPU, instead of three passes
/// over [batch, time, width] tensors (activation, product, scan).
/// </summary>
internal sealed class GatedRecurrenceExecutor : IFusedExecutor
{
    private readonly int value, gating;
    private readonly ActivationKind activation;
    private readonly RecurrenceModule recurrence;
    private readonly bool overwriteValue;

    private GatedRecurrenceExecutor(Graph graph, NodeId gateId, NodeId recurrenceId, RecurrenceModule recurrence, int[] readers)
    {
        var gate = (Gate)graph[gateId];
        (value, gating, activation, this.recurrence) = (gate.Value.Index, gate.Gating.Index, gate.Activation, recurrence);
        // a projection read only by this gate produced a tensor nothing else holds: h is written over it,
        // sparing a fresh [batch, time, width] allocation (never over an input the caller passed)
        overwriteValue = graph[gate.Value] is Projection && readers[value] == 1;
        Trigger = Math.Max(value, gating);
        Result = recurrenceId.Index;
        Interior = [gateId.Index];
    }

    public int Trigger { get; }

    public int Result { get; }

    public IReadOnlyList<int> Interior { get; }

    public static IEnumerable<GatedRecurrenceExecutor> For(Graph graph, NodeModule?[] modules)
    {
        var readers = RaiseAttention.Consumers(graph);
        for (int i = 0; i < graph.Nodes.Count; i++)
            if (graph.Nodes[i] is LinearRecurrence { State: StateKind.Real, Decay: null } r && graph[r.Source] is Gate g
                && GatedScan.Supports(g.Activation) && readers[r.Source.Index] == 1 && g.Value != g.Gating)
                yield return new GatedRecurrenceExecutor(graph, r.Source, new NodeId(i), (RecurrenceModule)modules[i]!, readers);
    }

    public Tensor? TryRun(Tensor[] values)
    {
        var (v, g) = (values[value], values[gating]);
        if (is_grad_enabled() || v.device.type != DeviceType.CPU || recurrence.Lambda is not { } lambda) return null;
        using var scope = NewDisposeScope();
        (v, g) = (v.contiguous(), g.contiguous());
        var h0 = recurrence.InitialStateBuffer?.contiguous();
        var h = overwriteValue ? v : empty_like(v);
        var shape = new GatedScan.Shape((int)v.shape[0], (int)v.shape[1], (int)v.shape[2]);
        lambda = lambda.contiguous();
        using var alive = RawStorage.KeepAlive(v, g, lambda, h0, h);
        unsafe
        {
            if (v.dtype == ScalarType.Float32)
                GatedScan.Run(RawStorage.Pointer<float>(v), RawStorage.Pointer<float>(g), RawStorage.Pointer<float>(lambda),
                    RawStorage.PointerOrNull<float>(h0), RawStorage.Pointer<float>(h), activation, shape);
            else
                GatedScan.Run(RawStorage.Pointer<double>(v), RawStorage.Pointer<double>(g), RawStorage.Pointer<double>(lambda),
                    RawStorage.PointerOrNull<double>(h0), RawStorage.Pointer<double>(h), activation, shape);
        }
        return h.MoveToOuterDisposeScope();
    }
}
