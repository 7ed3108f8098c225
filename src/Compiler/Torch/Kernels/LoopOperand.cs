using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>
/// An input of <see cref="GatedLinearAttentionLoop"/> read where it lies: <see cref="Anchor"/> is a tensor whose first
/// element is where <see cref="Rows"/> counts from, sharing the input's storage when its rows are evenly spaced with
/// their entries one apart (a slice of wider rows: Mamba-2's x within [x; B; C]), else a contiguous copy.
/// </summary>
internal sealed record LoopOperand(Tensor Anchor, GatedLinearAttentionLoop.Rows Rows)
{
    /// <summary>An input [batch, time, width] whose head h is read from column <paramref name="columns"/>[h] on.</summary>
    public static LoopOperand Of(Tensor x, int[] columns)
    {
        if (!EvenlySpaced(x))
        {
            var packed = x.contiguous();
            return new(packed, new(packed.shape[2], columns));
        }
        return new(x.as_strided([1], [1], x.storage_offset()), new(x.stride(1), columns));
    }

    /// <summary>An input [batch, time, heads width] read head by head, as packed: head h from column h width on.</summary>
    public static LoopOperand Packed(Tensor x, int heads, int width) =>
        Of(x, [.. Enumerable.Range(0, heads).Select(h => h * width)]);

    /// <summary>Row (b, t) at stride(1) (b time + t) from the first element, its entries one apart (and at least one
    /// element to anchor at).</summary>
    private static bool EvenlySpaced(Tensor x) =>
        x.dim() == 3 && x.numel() > 0 && x.stride(2) == 1 && (x.shape[0] == 1 || x.stride(0) == x.shape[1] * x.stride(1));

    public unsafe T* Pointer<T>() where T : unmanaged => RawStorage.Pointer<T>(Anchor);
}
