using Duality.Ir;
using Duality.Kernels;
using Duality.Passes;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// Structure-aware execution of a gated-RNN layer of the paper's form (input gate, real diagonal
/// recurrence, output gate, readout), such as LowerAttention produces. It reads the structure of
/// the current weights (again whenever a fingerprint of the weights changes): the input gates'
/// distinct rows, output gates whose rows each select one neuron, and the readout's distinct columns. When the output gates are
/// selections, the layer runs as a fused loop doing the work of attention's recurrent form
/// (O(neurons) per step, no [batch, time, neurons] tensors) instead of dense matrices; otherwise,
/// and whenever gradients are recorded (the dense path gives every weight its gradient), it
/// returns null and the graph runs node by node.
/// </summary>
internal sealed class GatedLayerExecutor : IFusedExecutor
{
    private readonly ProjectionModule inputValue, inputKey, outputValue, outputQuery, readout;
    private readonly RecurrenceModule recurrence;
    private readonly ActivationKind featureMap;

    private GatedLayerExecutor(RaiseAttention.Layer layer, NodeModule?[] modules)
    {
        Layer = layer;
        inputValue = (ProjectionModule)modules[layer.Interior[0].Index]!;
        inputKey = (ProjectionModule)modules[layer.Interior[1].Index]!;
        recurrence = (RecurrenceModule)modules[layer.Interior[3].Index]!;
        outputValue = (ProjectionModule)modules[layer.Interior[4].Index]!;
        outputQuery = (ProjectionModule)modules[layer.Interior[5].Index]!;
        readout = (ProjectionModule)modules[layer.Readout.Index]!;
        featureMap = layer.Input.Activation;
        Interior = layer.Interior.Select(n => n.Index).ToArray();
    }

    public RaiseAttention.Layer Layer { get; }

    public int Trigger => Layer.Source.Index;

    public int Result => Layer.Readout.Index;

    public IReadOnlyList<int> Interior { get; }

    public Tensor? TryRun(Tensor[] values, Workspace? workspace) => TryRun(values[Trigger]);

    /// <summary>The layers of a graph that this executor can run (fixed or trainable eigenvalues, real or complex).</summary>
    public static IReadOnlyList<GatedLayerExecutor> For(Graph graph, NodeModule?[] modules) =>
        RaiseAttention.Layers(graph)
            .Select(l => new GatedLayerExecutor(l, modules))
            .ToList();

    /// <summary>y: [batch, time, out] for x: [batch, time, in], or null when the structure is absent or gradients are on.</summary>
    public Tensor? TryRun(Tensor x)
    {
        if (is_grad_enabled() || x.device.type != DeviceType.CPU) return null;
        using var scope = NewDisposeScope();
        if (Current(x.dtype) is not { } layout) return null;
        int batch = (int)x.shape[0], time = (int)x.shape[1], width = layout.Values + layout.Keys;
        // both input-gate projections in one product: rows values | keys; a feature map gives the keys a tensor of their own
        var value = nn.functional.linear(x, layout.InputWeight, layout.InputBias).contiguous();
        var (key, keyOffset, keyStride) = featureMap == ActivationKind.Identity
            ? (value, layout.Values, width)
            : (Convert.Apply(featureMap, value.narrow(2, layout.Values, layout.Keys)).contiguous(), 0, layout.Keys);
        var sums = empty(batch, time, layout.Groups, dtype: x.dtype);
        if (x.dtype == ScalarType.Float32) Loop(value, key, keyOffset, sums, layout.Single, batch, time, width, keyStride);
        else Loop(value, key, keyOffset, sums, layout.Double, batch, time, width, keyStride);
        return nn.functional.linear(sums, layout.ReadoutColumns).MoveToOuterDisposeScope();
    }

    private static unsafe void Loop<T>(Tensor value, Tensor key, int keyOffset, Tensor sums, Schedule<T> schedule, int batch, int time,
        int valueStride, int keyStride) where T : unmanaged, System.Numerics.INumber<T>
    {
        using var alive = RawStorage.KeepAlive(value, key, sums);
        GatedLayerLoop.Run(RawStorage.Pointer<T>(value), RawStorage.Pointer<T>(key) + keyOffset, RawStorage.Pointer<T>(sums), schedule,
            batch, time, valueStride, keyStride);
    }

    /// <summary>
    /// The structure in the tensors and loop schedules that one run needs: the distinct input-gate rows
    /// [A_g; A_x] and their biases (Values rows, then Keys rows), the distinct readout columns.
    /// </summary>
    private sealed record Layout(Tensor InputWeight, Tensor InputBias, int Values, int Keys, Tensor ReadoutColumns, int Groups,
        Schedule<float> Single, Schedule<double> Double);

    private (ulong Fingerprint, ScalarType DType, Layout? Layout)? cached;

    /// <summary>
    /// The structure of the current weights, read again only when they change: a hash of the weights' bits
    /// costs one pass over them at memory speed, the analysis a copy and hashing of rows.
    /// </summary>
    private Layout? Current(ScalarType dtype)
    {
        Tensor[] weights = [inputValue.Weight, inputKey.Weight, outputValue.Weight, outputQuery.Weight, readout.Weight, recurrence.Lambda!,
            .. new[] { inputValue.BiasWeight, inputKey.BiasWeight }.OfType<Tensor>()];
        var fingerprint = Fingerprint.Of(weights);
        if (cached is { } c && c.Fingerprint == fingerprint && c.DType == dtype) return c.Layout;
        var layout = Read(dtype);
        cached = (fingerprint, dtype, layout);
        return layout;
    }

    private Layout? Read(ScalarType dtype)
    {
        var current = Layer with
        {
            InputValue = (Projection)inputValue.ReadBack(Layer.InputValue),
            InputKey = (Projection)inputKey.ReadBack(Layer.InputKey),
            Recurrence = (LinearRecurrence)recurrence.ReadBack(Layer.Recurrence),
            OutputValue = (Projection)outputValue.ReadBack(Layer.OutputValue),
            OutputQuery = (Projection)outputQuery.ReadBack(Layer.OutputQuery),
            ReadoutNode = (Projection)readout.ReadBack(Layer.ReadoutNode),
        };
        var structure = GatedLayerStructure.Of(current);
        if (structure is null) return null;
        var (single, @double) = (new Schedule<float>(structure.Plan), new Schedule<double>(structure.Plan));
        if (!@double.Supported) return null;
        Tensor Stack(double[][] rows) => tensor(rows.SelectMany(v => v).ToArray(), [rows.Length, rows[0].Length], dtype).DetachFromDisposeScope();
        double[][] rows = [.. structure.ValueRows, .. structure.KeyRows];
        var columns = structure.ReadoutColumns;
        var readoutRows = Enumerable.Range(0, columns[0].Length).Select(o => columns.Select(c => c[o]).ToArray()).ToArray();
        return new Layout(Stack(rows.Select(r => r[..^1]).ToArray()), tensor(rows.Select(r => r[^1]).ToArray(), dtype: dtype).DetachFromDisposeScope(),
            structure.ValueRows.Length, structure.KeyRows.Length, Stack(readoutRows), structure.Plan.Groups, single, @double);
    }
}
