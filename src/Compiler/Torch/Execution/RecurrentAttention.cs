using Duality.Kernels;
using Duality.Torch;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// Causal linear attention (any decay) without gradients on the CPU as one fused loop over time (a real decay on
/// <see cref="GatedLinearAttentionLoop"/>, a rotating one on <see cref="LinearAttentionLoop"/>): y_t = Re(S_t) phi(q_t), S_t = lambda_t S_{t-1} + v_t phi(k_t)^T, the state
/// of each head in cache, O(T key value) per head; the per-node fast path of <see cref="AttentionModule"/> and the
/// form a layer raised to an attention runs in.
/// </summary>
internal static class RecurrentAttention
{
    /// <summary>
    /// Without gradients, on the CPU: the recurrent form as one fused loop, O(T key value) per head with the state in cache, then the output projection. Projections, heads and output
    /// come from recycled memory when large, or from <paramref name="kept"/> buffers (the output only when it dies
    /// within the pass).
    /// </summary>
    public static Tensor Run(AttentionModule attention, Tensor x, KeptBuffers? kept)
    {
        var (node, query, key, value, output) = (attention.Node, attention.Query, attention.Key, attention.Value, attention.OutputWeight);
        var keepOutput = kept?.ResultDies == true;
        Func<long[], ScalarType, Tensor> Slot(int slot, bool keep = true) => KeptBuffers.Allocator(kept, slot, x.device, keep);
        Tensor Project(Tensor weight, int slot) => ProjectionModule.Product(x, weight, null, Slot(slot));
        var q = TensorValues.Apply(node.FeatureMap, Project(query, 0)).contiguous();
        var k = TensorValues.Apply(node.FeatureMap, Project(key, 1)).contiguous();
        var v = Project(value, 2);
        var decay = node.InputDependentDecay ? attention.HeadDecayLogits(x).sigmoid().contiguous()
            : node.HeadDecays is not null ? attention.HeadDecayValues(x).view(1, 1, node.Heads).expand(x.shape[0], x.shape[1], node.Heads).contiguous()
            : null;
        var y = Slot(3, output is not null || keepOutput)([x.shape[0], x.shape[1], node.Heads * node.ValueWidth], x.dtype);
        var (batch, time) = ((int)x.shape[0], (int)x.shape[1]);
        // a fixed real decay as a factor per step and head, as the gated-attention loop reads decays
        if (node.DecayPhase is null && decay is null && node.Decay is { } fixedDecay)
        {
            using TorchSharp.Scalar factor = fixedDecay;
            decay = full(x.shape[0], x.shape[1], node.Heads, factor, dtype: x.dtype, device: x.device);
        }
        using var alive = RawStorage.KeepAlive(q, k, v, decay, y);
        unsafe
        {
            if (node.DecayPhase is { } theta)
            {
                var gamma = node.Decay ?? 1.0;
                var shape = new LinearAttentionLoop.Shape(batch, time, node.Heads, node.KeyWidth, node.ValueWidth);
                if (x.dtype == ScalarType.Float32)
                    LinearAttentionLoop.Run(Pointer<float>(q), Pointer<float>(k), Pointer<float>(v),
                        new((float)(gamma * Math.Cos(theta)), (float)(gamma * Math.Sin(theta))), Pointer<float>(y), shape);
                else
                    LinearAttentionLoop.Run(Pointer<double>(q), Pointer<double>(k), Pointer<double>(v),
                        new(gamma * Math.Cos(theta), gamma * Math.Sin(theta)), Pointer<double>(y), shape);
            }
            else
            {
                var shape = new GatedLinearAttentionLoop.Shape(batch, time, node.Heads, node.KeyWidth, node.ValueWidth, decay is null ? 0 : 1);
                if (x.dtype == ScalarType.Float32)
                    GatedLinearAttentionLoop.Run(Pointer<float>(q), Pointer<float>(k), Pointer<float>(v), RawStorage.PointerOrNull<float>(decay),
                        null, normalised: false, Pointer<float>(y), shape);
                else
                    GatedLinearAttentionLoop.Run(Pointer<double>(q), Pointer<double>(k), Pointer<double>(v), RawStorage.PointerOrNull<double>(decay),
                        null, normalised: false, Pointer<double>(y), shape);
            }
        }
        return output is null ? y : ProjectionModule.Product(y, output, null, Slot(4, keepOutput));
    }

    private static unsafe T* Pointer<T>(Tensor t) where T : unmanaged => RawStorage.Pointer<T>(t);

}
