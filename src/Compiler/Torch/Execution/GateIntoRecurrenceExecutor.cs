using Duality.Torch;
using Duality.Ir;
using Duality.Kernels;
using Duality.Structure;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// A Gate read only by a real diagonal recurrence:
///   h_t = lambda_t * h_{t-1} + value_t * f(gate_t)       (value_t itself value'_t * f2(gate'_t) when it is a Gate read only there)
/// run as one fused pass (<see cref="GatedScan"/>) on the CPU, instead of three passes over [batch, time, width]
/// tensors (activation, product, scan); with gradients, as one autograd operation whose backward is one reverse pass
/// (<see cref="GatedScanFunction"/>). With an input-dependent decay (lambda_t = sigmoid(d_t) or e^(d_t)) the pass
/// computes lambda_t itself, with gradients too when d is per channel. A Scale read only by the gate, or only by the
/// decay, joins the group as a constant factor; a projection read only by the gate joins it too: without gradients its
/// product runs without the bias, which the pass adds, sparing the copy of the bias into the output and the product's
/// read of it; with a <see cref="Workspace"/> the products (and the state, when it dies within the pass) are written
/// into kept buffers.
/// </summary>
internal sealed class GateIntoRecurrenceExecutor : IFusedExecutor
{
    /// <summary>
    /// One operand of the pass: the node computing it (times the factor of a Scale the group took, <paramref name="Folded"/>),
    /// or the projection read only by the gate, which the group runs itself.
    /// </summary>
    private sealed record Operand(int Node, ProjectionModule? Absorbed, int Source, double Factor = 1, int? Folded = null)
    {
        public static Operand Of(Graph graph, NodeModule?[] modules, int[] readers, NodeId id) =>
            graph[id] is Projection projection && readers[id.Index] == 1 && modules[id.Index] is ProjectionModule module
                ? new Operand(id.Index, module, projection.Source.Index)
                : graph[id] is Scale scale && readers[id.Index] == 1
                    ? new Operand(scale.Source.Index, null, scale.Source.Index, scale.Factor, id.Index)
                    : new Operand(id.Index, null, id.Index);

        /// <summary>The nodes the group computes instead of their modules.</summary>
        public IEnumerable<int> Taken => Absorbed is not null ? [Node] : Folded is { } scale ? [scale] : [];

        /// <summary>The same operand read as its node's value (a projection the group does not run).</summary>
        public Operand Plain => Absorbed is null ? this : new Operand(Node, null, Node);

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
    // the value's own gate (a Gate read only by the pass's gate: RG-LRU's x sigmoid(i)), and the decay
    private readonly Operand? valueGate, decay;
    private readonly ActivationKind activation, valueActivation;
    private readonly bool exponentialDecay;
    private readonly int width;
    private readonly RecurrenceModule recurrence;

    private GateIntoRecurrenceExecutor(Operand value, (Operand Operand, ActivationKind Activation, int Node)? valueGate, Operand gating,
        Operand? decay, ActivationKind activation, LinearRecurrence node, RecurrenceModule recurrence, int gate, int result, int trigger)
    {
        (this.value, this.gating, this.decay, this.activation, this.recurrence) = (value, gating, decay, activation, recurrence);
        (this.valueGate, valueActivation) = (valueGate?.Operand, valueGate?.Activation ?? ActivationKind.Identity);
        (exponentialDecay, width) = (node.DecayForm == DecayForm.Logarithm, node.Width);
        (Trigger, Result) = (trigger, result);
        Interior = [gate, .. value.Taken, .. gating.Taken, .. decay?.Taken ?? [], .. valueGate is { } inner ? [inner.Node] : Array.Empty<int>()];
    }

    public string Kind => decay is null ? "gate + recurrence" : "gate + recurrence, input-dependent decay";

    public int Trigger { get; }

    public int Result { get; }

    public IReadOnlyList<int> Interior { get; }

    public static IEnumerable<GateIntoRecurrenceExecutor> For(Graph graph, NodeModule?[] modules)
    {
        var readers = GatedLayers.Readers(graph);
        for (int i = 0; i < graph.Nodes.Count; i++)
            if (graph.Nodes[i] is LinearRecurrence { State: StateKind.Real, NormalisedInput: false } r && graph[r.Source] is Gate g
                && GatedScan.Supports(g.Activation) && readers[r.Source.Index] == 1 && g.Value != g.Gating)
                yield return Group(graph, modules, readers, r, g, i);
    }

    /// <summary>
    /// The group around recurrence <paramref name="result"/>, run once the last node it reads is known. A value that is
    /// itself a Gate read only by this one (of a function the pass computes) joins the group as the value's own gate.
    /// </summary>
    private static GateIntoRecurrenceExecutor Group(Graph graph, NodeModule?[] modules, int[] readers, LinearRecurrence r, Gate g, int result)
    {
        var inner = graph[g.Value] is Gate candidate && readers[g.Value.Index] == 1 && GatedScan.Supports(candidate.Activation)
            && candidate.Value != candidate.Gating ? candidate : null;
        (Operand Operand, ActivationKind Activation, int Node)? valueGate =
            inner is null ? null : (new Operand(inner.Gating.Index, null, inner.Gating.Index), inner.Activation, g.Value.Index);
        var value = inner is null ? Operand.Of(graph, modules, readers, g.Value) : new Operand(inner.Value.Index, null, inner.Value.Index);
        var gating = Operand.Of(graph, modules, readers, g.Gating);
        var decay = r.Decay is { } d ? Operand.Of(graph, modules, readers, d).Plain : null;
        var trigger = new[] { value, gating, decay, valueGate?.Operand }.Where(o => o is not null).Max(o => o!.Source);
        return new GateIntoRecurrenceExecutor(value, valueGate, gating, decay, g.Activation, r, (RecurrenceModule)modules[result]!, r.Source.Index,
            result, trigger);
    }

    public Tensor? TryRun(Tensor[] values, Workspace? workspace)
    {
        var (input, gateInput) = (values[value.Source], values[gating.Source]);
        if (valueGate is not null && values[valueGate.Source].device.type != DeviceType.CPU) return null;
        if (input.device.type != DeviceType.CPU || gateInput.device.type != DeviceType.CPU) return null;
        if (decay is null && recurrence.Lambda is null) return null;
        if (is_grad_enabled())
        {
            // the reverse pass takes a decay per channel, of the value's dtype, on the CPU (a shared one runs node by node)
            var steps = decay?.Compute(values);
            if (steps is not null && (steps.shape[^1] != width || steps.device.type != DeviceType.CPU || steps.dtype != input.dtype)) return null;
            var form = new GatedScanFunction.Form(activation, gating.Factor, steps is not null, decay?.Factor ?? 1, exponentialDecay, valueActivation);
            return GatedScanFunction.Run(value.Compute(values), valueGate?.Compute(values), gating.Compute(values), steps ?? recurrence.Lambda!,
                recurrence.InitialStateBuffer, form);
        }
        using var scope = NewDisposeScope();
        // kept buffers: the gate's product always (only this pass reads it), the value's (then the state) when the state dies within the pass
        var kept = workspace?.For(~Result);
        var resultDies = kept?.ResultDies == true;
        var v = value.Compute(values, resultDies ? kept : null, 0);
        var g = gating.Compute(values, kept, 1);
        var (d, w) = (decay?.Compute(values), valueGate?.Compute(values));
        if (d is not null && (d.device.type != DeviceType.CPU || d.dtype != v.dtype)) return null;
        var (valueBias, gateBias) = (value.Absorbed?.BiasWeight?.contiguous(), gating.Absorbed?.BiasWeight?.contiguous());
        var h0 = recurrence.InitialStateBuffer?.contiguous();
        // the value's projection, run by this group, produced a tensor nothing else holds: h is written over it,
        // sparing a fresh [batch, time, width] allocation (never over an input the caller passed)
        var h = value.Absorbed is not null ? v
            : resultDies ? kept!.Value.Take(0, v.shape, v.dtype, v.device)
            : LargeTensors.EmptyLike(v);
        var shape = new GatedScan.Shape((int)v.shape[0], (int)v.shape[1], (int)v.shape[2]);
        var lambda = recurrence.Lambda?.contiguous();
        var shared = d is not null && d.shape[^1] == 1 && shape.Width != 1;
        using var alive = RawStorage.KeepAlive(v, w, g, d, lambda, h0, h, valueBias, gateBias);
        unsafe
        {
            if (v.dtype == ScalarType.Float32)
                GatedScan.Run(RawStorage.Pointer<float>(v), new GatedScan.ValueGate<float>(RawStorage.PointerOrNull<float>(w), valueActivation),
                    RawStorage.Pointer<float>(g), (float)gating.Factor,
                    d is null ? GatedScan.Decay<float>.Fixed(RawStorage.Pointer<float>(lambda!))
                        : GatedScan.Decay<float>.PerStep(RawStorage.Pointer<float>(d), shared, (float)decay!.Factor, exponentialDecay),
                    RawStorage.PointerOrNull<float>(h0), RawStorage.Pointer<float>(h),
                    new GatedScan.Biases<float>(RawStorage.PointerOrNull<float>(valueBias), RawStorage.PointerOrNull<float>(gateBias)), activation, shape);
            else
                GatedScan.Run(RawStorage.Pointer<double>(v), new GatedScan.ValueGate<double>(RawStorage.PointerOrNull<double>(w), valueActivation),
                    RawStorage.Pointer<double>(g), gating.Factor,
                    d is null ? GatedScan.Decay<double>.Fixed(RawStorage.Pointer<double>(lambda!))
                        : GatedScan.Decay<double>.PerStep(RawStorage.Pointer<double>(d), shared, decay!.Factor, exponentialDecay),
                    RawStorage.PointerOrNull<double>(h0), RawStorage.Pointer<double>(h),
                    new GatedScan.Biases<double>(RawStorage.PointerOrNull<double>(valueBias), RawStorage.PointerOrNull<double>(gateBias)), activation, shape);
        }
        return h.MoveToOuterDisposeScope();
    }
}
