using Duality.Ir;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>One module per node kind; inputs have none.</summary>
internal static class ModuleFactory
{
    public static NodeModule? Create(Node node, ScalarType dtype, ExecutionMode execution) => node switch
    {
        Input => null,
        Projection n => new ProjectionModule(n, dtype),
        Gate n => new GateModule(n),
        LinearRecurrence n => new RecurrenceModule(n, dtype, execution),
        Attention n => new AttentionModule(n, dtype, execution),
        Activation n => new ActivationModule(n),
        Add n => new AddModule(n),
        Concat n => new ConcatModule(n),
        Slice n => new SliceModule(n),
        LayerNorm n => new LayerNormModule(n, dtype),
        RmsNorm n => new RmsNormModule(n, dtype),
        Scale n => new ScaleModule(n),
        _ => throw new GraphException(new Diagnostic("no module", node.Name, node.Describe(),
            "this node kind cannot be compiled; rewrite it into the kinds of NodeKinds.All")),
    };
}
