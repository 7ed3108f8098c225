using System.Numerics;
using Duality.Ir;
using Duality.Kernels;
using Duality.Structure;
using static Duality.Streaming.VectorMath;

namespace Duality.Streaming;

/// <summary>
/// A gated RNN layer of the paper's form whose output gates are selections (as LowerAttention builds),
/// run by <see cref="GatedLayerLoop"/> one step at a time: projections onto the distinct input-gate rows (and
/// decay rows, for an input-dependent decay), O(neurons) state update and output products, and the readout from
/// the distinct readout columns.
/// </summary>
internal sealed unsafe class GatedLayerStepper<T> : Stepper<T> where T : unmanaged, INumber<T>
{
    private readonly Stepper<T> source;
    private readonly ActivationKind featureMap;
    private readonly GatedLayerLayout<T> layout;
    private readonly T[] valueWeight, valueBias, keyWeight, keyBias, decayWeight, decayBias, readout, value, key, decay, sums, state;

    public GatedLayerStepper(SelectionStructure structure, GatedLayerLayout<T> layout, ActivationKind featureMap, Stepper<T> source, int batch,
        int width) : base(batch, width)
    {
        (this.source, this.layout, this.featureMap) = (source, layout, featureMap);
        (valueWeight, valueBias) = Split(structure.ValueRows);
        (keyWeight, keyBias) = Split(structure.KeyRows);
        (decayWeight, decayBias) = Split(structure.DecayRows);
        var columns = structure.ReadoutColumns;
        readout = Enumerable.Range(0, width).SelectMany(o => columns.Select(c => T.CreateChecked(c[o]))).ToArray();
        (value, key, decay) = (new T[batch * valueBias.Length], new T[batch * keyBias.Length], new T[batch * decayBias.Length]);
        (sums, state) = (new T[batch * layout.Groups], new T[batch * layout.StateSize]);
    }

    /// <summary>Rows [W | b] into W (row-major) and b.</summary>
    private static (T[] Weight, T[] Bias) Split(double[][] rows) =>
        (rows.SelectMany(r => r.Take(r.Length - 1)).Select(T.CreateChecked).ToArray(), rows.Select(r => T.CreateChecked(r[^1])).ToArray());

    public override void Reset() => Array.Clear(state);

    public override void Step()
    {
        var (values, keys, decays, groups) = (valueBias.Length, keyBias.Length, decayBias.Length, layout.Groups);
        for (int b = 0; b < Batch; b++)
        {
            var x = source.Row(b);
            MatVec(valueWeight, valueBias, x, value.AsSpan(b * values, values));
            MatVec(keyWeight, keyBias, x, key.AsSpan(b * keys, keys));
            MatVec(decayWeight, decayBias, x, decay.AsSpan(b * decays, decays));
        }
        VectorMath.Apply(featureMap, key.AsSpan());
        VectorMath.Apply(ActivationKind.Sigmoid, decay.AsSpan());
        fixed (T* pv = value, pk = key, ps = sums, ph = state, pd = decay)
            GatedLayerLoop.Run(pv, pk, ps, layout, Batch, 1, values, keys, ph, parallel: false, decays == 0 ? null : pd, decays);
        for (int b = 0; b < Batch; b++) MatVec(readout, null, sums.AsSpan(b * groups, groups), Row(b));
    }
}
