using Duality.Execution;
using Duality.Ir;
using static Duality.Streaming.VectorMath;
using Duality.Streaming;
using System.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>y = x W^T + b; x: [batch, time, in], W: [out, in].</summary>
internal sealed class ProjectionModule : NodeModule
{
    private readonly Parameter weight;
    private readonly Parameter? bias;

    public ProjectionModule(Projection node, ScalarType dtype) : base(node.Name)
    {
        weight = TensorValues.Parameter(node.Weights!.Weight, dtype);
        register_parameter("weight", weight);
        if (node.Weights.Bias is { } b)
        {
            bias = TensorValues.Parameter(b, dtype);
            register_parameter("bias", bias);
        }
    }

    public Tensor Weight => weight;

    public Tensor? BiasWeight => bias;

    /// <summary>Without gradients on the CPU, a large output comes from recycled memory (<see cref="Execution.LargeTensors"/>).</summary>
    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        var pooled = x.device.type == DeviceType.CPU && !is_grad_enabled() && x.dim() == 3
            && Execution.LargeTensors.Pooled([x.shape[0], x.shape[1], weight.shape[0]], x.dtype);
        return Product(x, weight, bias, pooled ? Execution.LargeTensors.Empty : null);
    }

    /// <summary>The same product written into a kept buffer.</summary>
    public override Tensor Forward(IReadOnlyList<Tensor> inputs, KeptBuffers kept) =>
        Product(inputs[0], weight, bias, KeptBuffers.Allocator(kept, 0, inputs[0].device)).alias();

    /// <summary>
    /// x W^T + b: into a tensor from <paramref name="allocate"/> (the bias copied in, then the product added to
    /// it), or as libtorch's linear when there is none.
    /// </summary>
    public static Tensor Product(Tensor x, Tensor weight, Tensor? bias, Func<long[], ScalarType, Tensor>? allocate)
    {
        if (allocate is null) return nn.functional.linear(x, weight, bias);
        long rows = x.shape[0] * x.shape[1], features = weight.shape[0];
        var output = allocate([x.shape[0], x.shape[1], features], x.dtype);
        using var matrix = output.view(rows, features);
        using var input = x.reshape(rows, x.shape[2]);
        if (bias is null) matrix.addmm_(input, weight.t(), beta: 0).Dispose();
        else matrix.copy_(bias.expand(rows, features)).addmm_(input, weight.t()).Dispose();
        return output;
    }

    public override Node ReadBack(Node node) =>
        ((Projection)node) with { Weights = new ProjectionWeights(TensorValues.ToValues(weight), bias is null ? null : TensorValues.ToValues(bias)) };
}

internal sealed class ProjectionStepper<T>(Projection node, Stepper<T> source, int batch) : Stepper<T>(batch, node.OutFeatures)
    where T : unmanaged, INumber<T>
{
    private readonly T[] weight = Values<T>(node.Weights!.Weight);
    private readonly T[]? bias = node.Weights!.Bias is { } b ? Values<T>(b) : null;

    public override void Step()
    {
        for (int b = 0; b < Batch; b++) MatVec(weight, bias, source.Row(b), Row(b));
    }
}

internal sealed class ProjectionExecution : NodeExecution<Projection>
{
    protected override NodeModule Module(Projection node, ScalarType dtype, ExecutionMode execution) => new ProjectionModule(node, dtype);

    protected override Stepper<T> Stepper<T>(Projection node, Stepper<T>[] sources, int batch, int capacity) =>
        new ProjectionStepper<T>(node, sources[0], batch);
}
