using System.Numerics;
using Duality.Ir;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>f(x) elementwise; the identity returns its input.</summary>
internal sealed class ActivationModule(Activation node) : NodeModule(node.Name)
{
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => TensorValues.Apply(node.Kind, inputs[0]);
}

internal sealed class ActivationStepper<T>(Activation node, Stepper<T> source, int batch) : Stepper<T>(batch, source.Width)
    where T : unmanaged, IFloatingPointIeee754<T>
{
    public override void Step()
    {
        source.Output.AsSpan().CopyTo(Output);
        VectorMath.Apply(node.Kind, Output.AsSpan());
    }
}

internal sealed class ActivationExecution : NodeExecution<Activation>
{
    protected override NodeModule Module(Activation node, ScalarType dtype, ExecutionMode execution) => new ActivationModule(node);

    protected override Stepper<T> Stepper<T>(Activation node, Stepper<T>[] sources, int batch, int capacity) =>
        new ActivationStepper<T>(node, sources[0], batch);

    protected override bool ReturnsView(Activation node) => node.Kind == ActivationKind.Identity;
}
