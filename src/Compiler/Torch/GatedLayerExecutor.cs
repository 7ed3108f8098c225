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
internal sealed class GatedLayerExecutor
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
    }

    public RaiseAttention.Layer Layer { get; }

    /// <summary>The layers of a graph that this executor can run (real, fixed or trainable eigenvalues).</summary>
    public static IReadOnlyList<GatedLayerExecutor> For(Graph graph, NodeModule?[] modules) =>
        RaiseAttention.Layers(graph)
            .Where(l => l.Recurrence.State == StateKind.Real)
            .Select(l => new GatedLayerExecutor(l, modules))
            .ToList();

    /// <summary>y: [batch, time, out] for x: [batch, time, in], or null when the structure is absent or gradients are on.</summary>
    public Tensor? TryRun(Tensor x)
    {
        if (is_grad_enabled() || x.device.type != DeviceType.CPU) return null;
        using var scope = NewDisposeScope();
        var (plan, valueRows, keyRows, readoutColumns) = Structure();
        if (plan is null) return null;
        var value = nn.functional.linear(x, valueRows.narrow(1, 0, x.shape[2]), valueRows.select(1, x.shape[2])).contiguous();
        var key = Convert.Apply(featureMap, nn.functional.linear(x, keyRows.narrow(1, 0, x.shape[2]), keyRows.select(1, x.shape[2]))).contiguous();
        int batch = (int)x.shape[0], time = (int)x.shape[1];
        var sums = empty(batch, time, plan.Groups, dtype: x.dtype);
        unsafe
        {
            if (x.dtype == ScalarType.Float32)
                GatedLayerLoop.Run(RawStorage.Pointer<float>(value), RawStorage.Pointer<float>(key), RawStorage.Pointer<float>(sums), plan,
                    batch, time, (int)value.shape[2], (int)key.shape[2]);
            else
                GatedLayerLoop.Run(RawStorage.Pointer<double>(value), RawStorage.Pointer<double>(key), RawStorage.Pointer<double>(sums), plan,
                    batch, time, (int)value.shape[2], (int)key.shape[2]);
        }
        return nn.functional.linear(sums, readoutColumns).MoveToOuterDisposeScope();
    }

    private (double Fingerprint, GatedLayerLoop.Plan? Plan, Tensor? ValueRows, Tensor? KeyRows, Tensor? ReadoutColumns)? cached;
    private Tensor[]? probes;

    /// <summary>
    /// The structure of the current weights, read again only when they change: a fingerprint (each weight
    /// dotted with a fixed random tensor) costs one pass over the weights, the analysis several sorts.
    /// </summary>
    private (GatedLayerLoop.Plan? Plan, Tensor ValueRows, Tensor KeyRows, Tensor ReadoutColumns) Structure()
    {
        Tensor[] weights = [inputValue.Weight, inputKey.Weight, outputValue.Weight, outputQuery.Weight, readout.Weight, recurrence.Lambda!,
            .. new[] { inputValue.BiasWeight, inputKey.BiasWeight }.OfType<Tensor>()];
        if (probes is null || probes.Length != weights.Length)
        {
            var generator = new torch.Generator(20231);
            probes = weights.Select(w => rand(w.shape, dtype: w.dtype, generator: generator).DetachFromDisposeScope()).ToArray();
        }
        var fingerprint = weights.Zip(probes, (w, p) => (w.detach() * p).sum().to_type(ScalarType.Float64).item<double>()).Sum();
        if (cached is { } c && c.Fingerprint == fingerprint) return (c.Plan, c.ValueRows!, c.KeyRows!, c.ReadoutColumns!);
        var plan = Analyse(out var valueRows, out var keyRows, out var readoutColumns);
        cached = (fingerprint, plan, valueRows?.DetachFromDisposeScope(), keyRows?.DetachFromDisposeScope(), readoutColumns?.DetachFromDisposeScope());
        return (plan, valueRows!, keyRows!, readoutColumns!);
    }

    /// <summary>Reads the structure of the current weights; null when an output gate row mixes several neurons.</summary>
    private GatedLayerLoop.Plan? Analyse(out Tensor valueRows, out Tensor keyRows, out Tensor readoutColumns)
    {
        var (bg, bx, d) = (outputValue.Weight.detach(), outputQuery.Weight.detach(), readout.Weight.detach());
        valueRows = keyRows = readoutColumns = null!;
        if ((bg != 0).sum(1).max().item<long>() > 1 || (bx != 0).sum(1).max().item<long>() > 1) return null;
        (valueRows, var valueIndex) = Distinct(Augmented(inputValue));
        (keyRows, var keyIndex) = Distinct(Augmented(inputKey));
        var (columns, groupIndex, _) = d.t().unique(sorted: true, return_inverse: true, return_counts: false, dim: 0);
        readoutColumns = columns.t();
        var memory = bg.abs().argmax(1);
        var query = bx.abs().argmax(1);
        var coefficient = bg.gather(1, memory.unsqueeze(1)).squeeze(1) * bx.gather(1, query.unsqueeze(1)).squeeze(1);
        int[] Ints(Tensor t) => t.to_type(ScalarType.Int32).data<int>().ToArray();
        double[] Doubles(Tensor t) => t.to_type(ScalarType.Float64).data<double>().ToArray();
        return new GatedLayerLoop.Plan(Ints(valueIndex), Ints(keyIndex), Doubles(recurrence.Lambda!.detach()), Ints(memory), Ints(query),
            Doubles(coefficient), Ints(groupIndex!), (int)columns.shape[0]);
    }

    /// <summary>[W | b]: a projection's rows with their biases as a last column.</summary>
    private static Tensor Augmented(ProjectionModule p)
    {
        var w = p.Weight.detach();
        var b = p.BiasWeight?.detach() ?? zeros(w.shape[0], dtype: w.dtype);
        return cat([w, b.unsqueeze(1)], 1);
    }

    private static (Tensor Rows, Tensor Index) Distinct(Tensor augmented)
    {
        var (rows, index, _) = augmented.unique(sorted: true, return_inverse: true, return_counts: false, dim: 0);
        return (rows, index!);
    }
}
