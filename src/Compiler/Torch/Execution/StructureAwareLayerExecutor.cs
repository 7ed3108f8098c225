using Duality.Torch;
using Duality.Ir;
using Duality.Kernels;
using Duality.Structure;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// Structure-aware execution of a gated-RNN layer of the paper's form (input gate, real diagonal
/// recurrence, output gate, readout), such as LowerAttention produces. It reads the structure of
/// the current weights (again whenever a fingerprint of the weights changes): the input gates'
/// distinct rows, output gates whose rows each select one neuron, and the readout's distinct columns. When the output gates are
/// selections, the layer runs as a fused loop doing the work of attention's recurrent form
/// (O(neurons) per step, no [batch, time, neurons] tensors) instead of dense matrices; an input-dependent
/// decay (LowerAttention's split form) gives its heads per-step eigenvalues. Weights without selections that
/// raise to an attention (the compressed construction) run as that attention. Otherwise, and whenever
/// gradients are recorded (the dense path gives every weight its gradient), it returns null and the graph
/// runs node by node.
/// </summary>
internal sealed class StructureAwareLayerExecutor : IFusedExecutor
{
    private readonly ProjectionModule inputValue, inputKey, outputValue, outputQuery, readout;
    private readonly ProjectionModule? decay;
    private readonly RecurrenceModule recurrence;
    private readonly ActivationKind featureMap;

    private StructureAwareLayerExecutor(GatedLayer layer, NodeModule?[] modules)
    {
        Layer = layer;
        var ids = layer.Ids;
        inputValue = (ProjectionModule)modules[ids.InputValue.Index]!;
        inputKey = (ProjectionModule)modules[ids.InputKey.Index]!;
        recurrence = (RecurrenceModule)modules[ids.Recurrence.Index]!;
        outputValue = (ProjectionModule)modules[ids.OutputValue.Index]!;
        outputQuery = (ProjectionModule)modules[ids.OutputQuery.Index]!;
        readout = (ProjectionModule)modules[ids.Readout.Index]!;
        decay = layer.Decay is { } split ? (ProjectionModule)modules[split.ProjectionId.Index]! : null;
        featureMap = layer.Input.Activation;
        Interior = layer.Interior.Select(n => n.Index).ToArray();
    }

    public GatedLayer Layer { get; }

    public string Kind => Layer.Decay is null ? "structure-aware gated layer" : "structure-aware gated layer, input-dependent decay";

    public int Trigger => Layer.Source.Index;

    public int Result => Layer.Ids.Readout.Index;

    public IReadOnlyList<int> Interior { get; }

    public Tensor? TryRun(Tensor[] values, Workspace? workspace) => TryRun(values[Trigger], workspace?.For(~Result));

    /// <summary>The layers of a graph that this executor can run (fixed or trainable eigenvalues, real or complex, or an input-dependent decay).</summary>
    public static IReadOnlyList<StructureAwareLayerExecutor> For(Graph graph, NodeModule?[] modules) =>
        GatedLayers.In(graph)
            .Select(l => new StructureAwareLayerExecutor(l, modules))
            .ToList();

    /// <summary>
    /// y: [batch, time, out] for x: [batch, time, in], or null when the structure is absent or gradients are on. Scratch
    /// tensors come from <paramref name="kept"/> buffers when given (the result too when it dies within the pass), else
    /// from recycled memory when large.
    /// </summary>
    public Tensor? TryRun(Tensor x, KeptBuffers? kept = null)
    {
        if (is_grad_enabled() || x.device.type != DeviceType.CPU) return null;
        var reading = Current(x.dtype);
        if (reading.Raised is { } attention) return kept is null ? attention.Forward([x]) : RecurrentAttention.Run(attention, x, kept).alias();
        if (reading.Selection is not { } layout) return null;
        var resultDies = kept?.ResultDies == true;
        Func<long[], ScalarType, Tensor> Slot(int slot, bool keep = true) => KeptBuffers.Allocator(kept, slot, x.device, keep);
        using var scope = NewDisposeScope();
        int batch = (int)x.shape[0], time = (int)x.shape[1], width = layout.Values + layout.Keys;
        // both input-gate projections in one product: rows values | keys; a feature map gives the keys a tensor of their own
        var value = ProjectionModule.Product(x, layout.InputWeight, layout.InputBias, Slot(0));
        var (key, keyOffset, keyStride) = featureMap == ActivationKind.Identity
            ? (value, layout.Values, width)
            : (TensorValues.Apply(featureMap, value.narrow(2, layout.Values, layout.Keys)).contiguous(), 0, layout.Keys);
        var sums = Slot(1)([batch, time, layout.Groups], x.dtype);
        // per-step eigenvalues of the neurons with an input-dependent decay: sigmoid of the distinct decay rows
        var decays = layout.Decay is { } rows ? nn.functional.linear(x, rows.Weight, rows.Bias).sigmoid_().contiguous() : null;
        if (x.dtype == ScalarType.Float32) Loop(value, key, keyOffset, sums, decays, layout.Single, batch, time, width, keyStride);
        else Loop(value, key, keyOffset, sums, decays, layout.Double, batch, time, width, keyStride);
        var y = ProjectionModule.Product(sums, layout.ReadoutColumns, null, Slot(2, resultDies));
        return (resultDies ? y.alias() : y).MoveToOuterDisposeScope();
    }

    private static unsafe void Loop<T>(Tensor value, Tensor key, int keyOffset, Tensor sums, Tensor? decays, GatedLayerLayout<T> layout, int batch,
        int time, int valueStride, int keyStride) where T : unmanaged, System.Numerics.INumber<T>
    {
        using var alive = RawStorage.KeepAlive(value, key, sums, decays);
        GatedLayerLoop.Run(RawStorage.Pointer<T>(value), RawStorage.Pointer<T>(key) + keyOffset, RawStorage.Pointer<T>(sums), layout,
            batch, time, valueStride, keyStride, decay: RawStorage.PointerOrNull<T>(decays), decayWidth: decays is null ? 0 : (int)decays.shape[2]);
    }

    /// <summary>
    /// The structure in the tensors and loop schedules that one run needs: the distinct input-gate rows
    /// [A_g; A_x] and their biases (Values rows, then Keys rows), the distinct readout columns, and the distinct
    /// rows of an input-dependent decay.
    /// </summary>
    private sealed record Layout(Tensor InputWeight, Tensor InputBias, int Values, int Keys, Tensor ReadoutColumns, int Groups,
        GatedLayerLayout<float> Single, GatedLayerLayout<double> Double, (Tensor Weight, Tensor Bias)? Decay);

    /// <summary>How the current weights run: as the selection-structured loop, as the attention they raise to, or (neither) node by node.</summary>
    private sealed record Reading(Layout? Selection, AttentionModule? Raised);

    private (ulong Fingerprint, ScalarType DType, Reading Reading)? cached;

    public void Forget() => cached = null;

    /// <summary>
    /// The structure of the current weights, read again only when they change: a hash of the weights' bits
    /// costs one pass over them at memory speed, the analysis a copy and hashing of rows.
    /// </summary>
    private Reading Current(ScalarType dtype)
    {
        Tensor[] weights = [inputValue.Weight, inputKey.Weight, outputValue.Weight, outputQuery.Weight, readout.Weight, recurrence.Lambda!,
            .. new[] { inputValue.BiasWeight, inputKey.BiasWeight, decay?.Weight, decay?.BiasWeight }.OfType<Tensor>()];
        var fingerprint = Fingerprint.Of(weights);
        if (cached is { } c && c.Fingerprint == fingerprint && c.DType == dtype) return c.Reading;
        var reading = Read(dtype);
        cached = (fingerprint, dtype, reading);
        return reading;
    }

    private Reading Read(ScalarType dtype)
    {
        var modules = new Dictionary<string, NodeModule?> { [Layer.InputValue.Name] = inputValue, [Layer.InputKey.Name] = inputKey,
            [Layer.Recurrence.Name] = recurrence, [Layer.OutputValue.Name] = outputValue, [Layer.OutputQuery.Name] = outputQuery,
            [Layer.Readout.Name] = readout, [Layer.Decay?.Projection.Name ?? ""] = decay };
        var current = Layer.WithNodes(node => modules[node.Name]!.ReadBack(node));
        return Selection(current, dtype) is { } layout ? new Reading(layout, null) : new Reading(null, Raised(current, dtype));
    }

    /// <summary>
    /// Weights whose output gates mix neurons (the compressed construction stores x x^T, and each output reads a
    /// row of W_V times it) run as the attention they raise to, at its cost; null when they raise to none. Only exact
    /// zeros count as zero here: the attention must compute the layer's function, not an approximation of it.
    /// </summary>
    private static AttentionModule? Raised(GatedLayer layer, ScalarType dtype)
    {
        if (AttentionForm.Of(layer).Attention is not { } attention) return null;
        using var scope = NewDisposeScope();
        var module = new AttentionModule(attention, dtype, ExecutionMode.Auto);
        foreach (var parameter in module.parameters()) parameter.DetachFromDisposeScope();
        return module;
    }

    private static Layout? Selection(GatedLayer current, ScalarType dtype)
    {
        var structure = SelectionStructure.Of(current);
        if (structure is null) return null;
        var plan = SelectionPlans.Of(structure);
        var (single, @double) = (new GatedLayerLayout<float>(plan), new GatedLayerLayout<double>(plan));
        if (!@double.Supported) return null;
        Tensor Stack(double[][] rows) => tensor(rows.SelectMany(v => v).ToArray(), [rows.Length, rows[0].Length], dtype).DetachFromDisposeScope();
        Tensor Biases(double[][] rows) => tensor(rows.Select(r => r[^1]).ToArray(), dtype: dtype).DetachFromDisposeScope();
        double[][] rows = [.. structure.ValueRows, .. structure.KeyRows];
        var columns = structure.ReadoutColumns;
        var readoutRows = Enumerable.Range(0, columns[0].Length).Select(o => columns.Select(c => c[o]).ToArray()).ToArray();
        var decayRows = structure.DecayRows;
        return new Layout(Stack(rows.Select(r => r[..^1]).ToArray()), Biases(rows),
            structure.ValueRows.Length, structure.KeyRows.Length, Stack(readoutRows), structure.Groups, single, @double,
            decayRows.Length == 0 ? null : (Stack(decayRows.Select(r => r[..^1]).ToArray()), Biases(decayRows)));
    }
}
