using static TorchSharp.torch;

namespace Duality.Kernels;

/// <summary>
/// The reverse passes' frame: a backward runs on whatever thread calls <c>backward()</c>, often with no dispose scope of
/// its own. Run in one, every tensor it makes stays reachable until it returns (a temporary whose managed wrapper nothing
/// else holds could otherwise be finalised, its native tensor freed, while a native call still reads it) and is freed
/// when it returns; the gradients it returns move out, and the incoming gradient is kept alive to the end.
/// </summary>
internal static class BackwardScope
{
    public static List<Tensor> Run(Tensor grad, Func<List<Tensor>> gradients)
    {
        using var scope = NewDisposeScope();
        var result = gradients();
        scope.MoveToOuter(result.Where(g => g is not null));
        GC.KeepAlive(grad);
        return result;
    }
}
