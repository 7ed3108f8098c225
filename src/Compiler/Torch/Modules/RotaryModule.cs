using System.Numerics;
using Duality.Ir;
using Duality.Kernels;
using Duality.Streaming;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// Each head's feature pairs (2j, 2j+1) rotated by t theta_j at step t; x: [batch, time, width] viewed as
/// [batch, time, heads, d/2, 2]. The angles t theta_j are formed in float64 and their cosines and sines then taken to
/// the input's dtype (a float32 product t theta_j would lose the angle's low bits as t grows). On the CPU in float32 and
/// float64 (not TorchOps) one pass forward and one back (<see cref="RotaryFunction"/>); elsewhere six elementwise
/// operations on the pairs and a stack. Step form: the state is the position t of the next step, [1] int64 on the CPU.
/// </summary>
internal sealed class RotaryModule : NodeModule
{
    private readonly Rotary node;
    private readonly ExecutionMode execution;
    private readonly double[] thetas;

    public RotaryModule(Rotary node, ExecutionMode execution) : base(node.Name)
    {
        (this.node, this.execution) = (node, execution);
        thetas = [.. Enumerable.Range(0, node.HeadWidth / 2).Select(node.Theta)];
    }

    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => Rotate(inputs[0], 0);

    /// <summary>x: [batch, time, width] rotated as if its first step stood at position <paramref name="start"/>.</summary>
    private Tensor Rotate(Tensor x, long start)
    {
        using var scope = NewDisposeScope();
        var (batch, time) = (x.shape[0], x.shape[1]);
        var positions = HeldArithmetic.Positions(start, time).unsqueeze(1);
        // angles [time, 1, d/2]: one row per step, broadcast over the heads
        var angles = (positions * tensor(thetas, dtype: ScalarType.Float64).unsqueeze(0)).unsqueeze(1);
        var (cos, sin) = (angles.cos().to(x.dtype, x.device), angles.sin().to(x.dtype, x.device));
        if (Fused(x))
        {
            // per pair (cos, cos) and (-sin, sin): [time, head width]
            var cosines = stack([cos, cos], -1).reshape(time, node.HeadWidth);
            var sines = stack([sin.neg(), sin], -1).reshape(time, node.HeadWidth);
            return RotaryFunction.Run(x, cosines, sines, node.Heads).MoveToOuterDisposeScope();
        }
        var pairs = x.reshape(batch, time, node.Heads, node.HeadWidth / 2, 2);
        var (even, odd) = (pairs.select(-1, 0), pairs.select(-1, 1));
        var rotated = stack([even * cos - odd * sin, (even * sin).Plus(odd * cos)], -1);
        return rotated.reshape(batch, time, node.Width).MoveToOuterDisposeScope();
    }

    private bool Fused(Tensor x) =>
        execution != ExecutionMode.TorchOps && x.device.type == DeviceType.CPU && x.dtype is ScalarType.Float32 or ScalarType.Float64;

    public override bool IsStateful => true;

    public override Tensor[] InitialState(long batch) => [zeros(1, dtype: ScalarType.Int64)];

    public override (Tensor Output, Tensor[] State) Step(IReadOnlyList<Tensor> inputs, Tensor[] state)
    {
        var position = state[0].item<long>();
        return (Rotate(inputs[0], position), [tensor(new[] { position + 1 })]);
    }
}

/// <summary>The rotation one token at a time: the position, and the cosines and sines of the current step's angles.</summary>
internal sealed class RotaryStepper<T> : Stepper<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Stepper<T> source;
    private readonly double[] thetas;
    private readonly T[] cos, sin;
    private readonly int heads, headWidth;
    private long position;

    public RotaryStepper(Rotary node, Stepper<T> source, int batch) : base(batch, node.Width)
    {
        (this.source, heads, headWidth) = (source, node.Heads, node.HeadWidth);
        thetas = [.. Enumerable.Range(0, headWidth / 2).Select(node.Theta)];
        (cos, sin) = (new T[thetas.Length], new T[thetas.Length]);
    }

    public override void Reset() => position = 0;

    public override void Step()
    {
        for (int j = 0; j < thetas.Length; j++)
        {
            var angle = position * thetas[j];
            (cos[j], sin[j]) = (T.CreateChecked(Math.Cos(angle)), T.CreateChecked(Math.Sin(angle)));
        }
        for (int b = 0; b < Batch; b++)
        {
            Span<T> x = source.Row(b), y = Row(b);
            for (int h = 0; h < heads; h++)
                for (int j = 0; j < thetas.Length; j++)
                {
                    int even = h * headWidth + 2 * j, odd = even + 1;
                    (y[even], y[odd]) = (x[even] * cos[j] - x[odd] * sin[j], x[even] * sin[j] + x[odd] * cos[j]);
                }
        }
        position++;
    }
}

internal sealed class RotaryExecution : NodeExecution<Rotary>
{
    protected override NodeModule Module(Rotary node, ScalarType dtype, ExecutionMode execution) => new RotaryModule(node, execution);

    protected override Stepper<T> Stepper<T>(Rotary node, Stepper<T>[] sources, int batch, int capacity) =>
        new RotaryStepper<T>(node, sources[0], batch);
}
