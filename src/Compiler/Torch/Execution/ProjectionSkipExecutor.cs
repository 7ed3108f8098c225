using Duality.Ir;
using Duality.Kernels;
using Duality.Structure;
using Duality.Torch;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// A projection and a channel scale added, each read only by the Add (the LRU's y = C h + D x):
///   y = (D * x + b) + h W^T
/// with the product added by the matrix multiply itself into the scaled skip, where node by node the product, the scale
/// and the sum each write [batch, time, width] and the sum reads two. The same libtorch operations with or without
/// gradients (their backward as node by node's), on any device and dtype.
/// </summary>
internal sealed class ProjectionSkipExecutor : IFusedExecutor
{
    private readonly Projection projection;
    private readonly ChannelScale scale;
    private readonly ProjectionModule product;
    private readonly ChannelScaleModule factors;

    private ProjectionSkipExecutor(Projection projection, ChannelScale scale, ProjectionModule product, ChannelScaleModule factors,
        int result, int[] interior)
    {
        (this.projection, this.scale, this.product, this.factors) = (projection, scale, product, factors);
        Result = result;
        Interior = interior;
        Trigger = Math.Max(projection.Source.Index, scale.Source.Index);
    }

    public string Kind => "projection + scaled skip";

    public int Trigger { get; }

    public int Result { get; }

    public IReadOnlyList<int> Interior { get; }

    public static IEnumerable<ProjectionSkipExecutor> For(Graph graph, NodeModule?[] modules)
    {
        var readers = GatedLayers.Readers(graph);
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            if (graph.Nodes[i] is not Add add || add.Left == add.Right) continue;
            foreach (var (p, s) in new[] { (add.Left, add.Right), (add.Right, add.Left) })
                if (graph[p] is Projection projection && graph[s] is ChannelScale scale && readers[p.Index] == 1 && readers[s.Index] == 1
                    && modules[p.Index] is ProjectionModule product && modules[s.Index] is ChannelScaleModule factors)
                    yield return new ProjectionSkipExecutor(projection, scale, product, factors, i, [p.Index, s.Index]);
        }
    }

    public Tensor? TryRun(Tensor[] values, Workspace? workspace)
    {
        var (h, x) = (values[projection.Source.Index], values[scale.Source.Index]);
        if (h.dim() != 3 || x.dim() != 3) return null;
        long rows = h.shape[0] * h.shape[1], features = product.Weight.shape[0];
        var recording = is_grad_enabled();
        var skip = x * factors.Factors;
        if (product.BiasWeight is { } bias) skip = recording ? skip.Plus(bias) : skip.add_(bias, HeldScalars.One);
        using var input = h.reshape(rows, h.shape[2]);
        using var matrix = skip.view(rows, features);
        if (!recording)
        {
            matrix.addmm_(input, product.Weight.t()).Dispose();
            return skip;
        }
        return addmm(matrix, input, product.Weight.t(), beta: 1, alpha: 1).view(h.shape[0], h.shape[1], features);
    }
}
