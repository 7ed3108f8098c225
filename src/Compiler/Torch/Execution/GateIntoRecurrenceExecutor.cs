using Duality.Torch;
using Duality.Ir;
using Duality.Kernels;
using Duality.Structure;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// A Gate read only by a real diagonal recurrence with fixed or trainable eigenvalues:
///   h_t = lambda * h_{t-1} + value_t * f(gate_t)
/// run as one fused pass (<see cref="GatedScan"/>) on the CPU, instead of three passes over [batch, time,
/// width] tensors (activation, product, scan); with gradients, as one autograd operation whose backward is
/// one reverse pass (<see cref="GatedScanFunction"/>). A projection read only by the gate joins
/// the group: without gradients its product runs without the bias, which the pass adds, sparing the copy of
/// the bias into the output and the product's read of it; with a <see cref="Workspace"/> the products (and the
/// state, when it dies within the pass) are written into kept buffers.
/// </summary>
internal sealed class GateIntoRecurrenceExecutor : IFusedExecutor
{
    /// <summary>One operand of the gate: the node computing it, or the projection read only by the gate, which the group runs itself.</summary>
    private sealed record Operand(int Node, ProjectionModule? Absorbed, int Source)
    {
        public static Operand Of(Graph graph, NodeModule?[] modules, int[] readers, NodeId id) =>
            graph[id] is Projection projection && readers[id.Index] == 1 && modules[id.Index] is ProjectionModule module
                ? new Operand(id.Index, module, projection.Source.Index)
                : new Operand(id.Index, null, id.Index);

        /// <summary>
        /// The operand: with gradients, an absorbed projection as libtorch computes it; without, its product alone
        /// (the pass adds the bias), into a kept buffer when one is given, else into recycled memory.
        /// </summary>
        public Tensor Compute(Tensor[] values, KeptBuffers? kept = null, int slot = 0)
        {
            if (Absorbed is not { } projection) return values[Node].contiguous();
            if (is_grad_enabled()) return ProjectionModule.Product(values[Source], projection.Weight, projection.BiasWeight, null);
            return ProjectionModule.Product(values[Source], projection.Weight, null, KeptBuffers.Allocator(kept, slot, values[Source].device));
        }
    }

    private readonly Operand value, gating;
    private readonly ActivationKind activation;
    private readonly RecurrenceModule recurrence;

    private GateIntoRecurrenceExecutor(Graph graph, NodeModule?[] modules, NodeId gateId, NodeId recurrenceId, int[] readers)
    {
        var gate = (Gate)graph[gateId];
        value = Operand.Of(graph, modules, readers, gate.Value);
        gating = Operand.Of(graph, modules, readers, gate.Gating);
        (activation, recurrence) = (gate.Activation, (RecurrenceModule)modules[recurrenceId.Index]!);
        Trigger = Math.Max(value.Source, gating.Source);
        Result = recurrenceId.Index;
        Interior = [gateId.Index, .. new[] { value, gating }.Where(o => o.Absorbed is not null).Select(o => o.Node)];
    }

    public string Kind => "gate + recurrence";

    public int Trigger { get; }

    public int Result { get; }

    public IReadOnlyList<int> Interior { get; }

    public static IEnumerable<GateIntoRecurrenceExecutor> For(Graph graph, NodeModule?[] modules)
    {
        var readers = GatedLayers.Readers(graph);
        for (int i = 0; i < graph.Nodes.Count; i++)
            if (graph.Nodes[i] is LinearRecurrence { State: StateKind.Real, Decay: null, NormalisedInput: false } r && graph[r.Source] is Gate g
                && GatedScan.Supports(g.Activation) && readers[r.Source.Index] == 1 && g.Value != g.Gating)
                yield return new GateIntoRecurrenceExecutor(graph, modules, r.Source, new NodeId(i), readers);
    }

    public Tensor? TryRun(Tensor[] values, Workspace? workspace)
    {
        var (input, gateInput) = (values[value.Source], values[gating.Source]);
        if (input.device.type != DeviceType.CPU || gateInput.device.type != DeviceType.CPU || recurrence.Lambda is not { } lambda) return null;
        if (is_grad_enabled())
            return GatedScanFunction.Run(value.Compute(values), gating.Compute(values), lambda, recurrence.InitialStateBuffer, activation);
        using var scope = NewDisposeScope();
        // kept buffers: the gate's product always (only this pass reads it), the value's (then the state) when the state dies within the pass
        var kept = workspace?.For(~Result);
        var resultDies = kept?.ResultDies == true;
        var v = value.Compute(values, resultDies ? kept : null, 0);
        var g = gating.Compute(values, kept, 1);
        var (valueBias, gateBias) = (value.Absorbed?.BiasWeight?.contiguous(), gating.Absorbed?.BiasWeight?.contiguous());
        var h0 = recurrence.InitialStateBuffer?.contiguous();
        // the value's projection, run by this group, produced a tensor nothing else holds: h is written over it,
        // sparing a fresh [batch, time, width] allocation (never over an input the caller passed)
        var h = value.Absorbed is not null ? v
            : resultDies ? kept!.Value.Take(0, v.shape, v.dtype, v.device)
            : LargeTensors.EmptyLike(v);
        var shape = new GatedScan.Shape((int)v.shape[0], (int)v.shape[1], (int)v.shape[2]);
        lambda = lambda.contiguous();
        using var alive = RawStorage.KeepAlive(v, g, lambda, h0, h, valueBias, gateBias);
        unsafe
        {
            if (v.dtype == ScalarType.Float32)
                GatedScan.Run(RawStorage.Pointer<float>(v), RawStorage.Pointer<float>(g), RawStorage.Pointer<float>(lambda),
                    RawStorage.PointerOrNull<float>(h0), RawStorage.Pointer<float>(h),
                    new GatedScan.Biases<float>(RawStorage.PointerOrNull<float>(valueBias), RawStorage.PointerOrNull<float>(gateBias)), activation, shape);
            else
                GatedScan.Run(RawStorage.Pointer<double>(v), RawStorage.Pointer<double>(g), RawStorage.Pointer<double>(lambda),
                    RawStorage.PointerOrNull<double>(h0), RawStorage.Pointer<double>(h),
                    new GatedScan.Biases<double>(RawStorage.PointerOrNull<double>(valueBias), RawStorage.PointerOrNull<double>(gateBias)), activation, shape);
        }
        return h.MoveToOuterDisposeScope();
    }
}
