using Duality.Ir;
using Duality.Kernels;
using Duality.Structure;
using Duality.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Execution;

/// <summary>
/// A causal convolution read only by an activation (Mamba-2's SiLU(Conv1D(.))) as one pass without gradients: y = f(p)
/// written where the convolution wrote p and the activation read it and wrote y (<see cref="CausalConvolution"/>). On the
/// CPU, in float32 or float64, for at most four taps and a width of whole vectors; with gradients, or otherwise, the
/// nodes run one by one (a reverse pass forming f'(p) again from x, tried, kept more vectors live than the registers hold
/// and ran the convolution's backward about 2x slower at [8, 1024, 640]).
/// </summary>
internal sealed class ConvolutionActivationExecutor : IFusedExecutor
{
    private readonly CausalConv1d convolution;
    private readonly CausalConv1dModule module;
    private readonly ActivationKind activation;

    private ConvolutionActivationExecutor(CausalConv1d convolution, CausalConv1dModule module, ActivationKind activation, int result, int node)
    {
        (this.convolution, this.module, this.activation) = (convolution, module, activation);
        (Result, Interior, Trigger) = (result, [node], convolution.Source.Index);
    }

    public string Kind => "causal convolution + activation";

    public int Trigger { get; }

    public int Result { get; }

    public IReadOnlyList<int> Interior { get; }

    public static IEnumerable<ConvolutionActivationExecutor> For(Graph graph, NodeModule?[] modules)
    {
        var readers = GatedLayers.Readers(graph);
        for (int i = 0; i < graph.Nodes.Count; i++)
            if (graph.Nodes[i] is Activation { Kind: ActivationKind.SiLU or ActivationKind.Sigmoid or ActivationKind.Tanh or ActivationKind.ReLU } activation
                && graph[activation.Source] is CausalConv1d convolution && readers[activation.Source.Index] == 1
                && modules[activation.Source.Index] is CausalConv1dModule module)
                yield return new ConvolutionActivationExecutor(convolution, module, activation.Kind, i, activation.Source.Index);
    }

    public Tensor? TryRun(Tensor[] values, Workspace? workspace)
    {
        var x = values[convolution.Source.Index];
        var fits = x.dtype switch
        {
            ScalarType.Float32 => CausalConvolution.Activates<float>(convolution.Width, convolution.KernelSize),
            ScalarType.Float64 => CausalConvolution.Activates<double>(convolution.Width, convolution.KernelSize),
            _ => false,
        };
        var (weight, bias) = module.Weights;
        if (!fits || x.device.type != DeviceType.CPU || x.dim() != 3 || GradientGate.Records(x, weight, bias)) return null;
        return CausalConvolutionFunction.Activated(x, weight, bias, activation);
    }
}
