using Duality.Builders;
using Duality.Ir;
using Duality.Passes;
using Duality.Torch;
using DoubleTensor = Duality.Ir.DoubleTensor;
using Duality.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Training;

/// <summary>
/// Teacher-student: a random causal linear attention teacher (W_Q, W_K, W_V entries N(0, 1/d)), inputs
/// x_t ~ N(0, I) over <c>Time</c> steps; the loss is the mean squared error divided by the teacher's
/// output variance, so 1 is the loss of predicting zero.
/// </summary>
public sealed class TeacherStudentTask : ITrainingTask
{
    private readonly CompiledGraph teacher;

    /// A task of <paramref name="width"/> features over <paramref name="time"/> steps whose teacher is drawn from
    /// <paramref name="seed"/>, run in <paramref name="dtype"/>; the teacher's output variance is estimated on 4096 sequences.
    public TeacherStudentTask(int width, int time = 10, int seed = 0, ScalarType dtype = ScalarType.Float32)
    {
        (Width, Time, DType) = (width, time, dtype);
        var random = new Random(seed);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()) / Math.Sqrt(width);
        DoubleTensor Matrix() => DoubleTensor.FromShape([width, width], Enumerable.Range(0, width * width).Select(_ => Normal()).ToArray());
        Teacher = Model.Input("x", width).Attention(1, width, width, weights: new AttentionWeights(Matrix(), Matrix(), Matrix(), null), name: "teacher").Build();
        teacher = Teacher.Compile(new CompileOptions { DType = dtype });
        using var _ = no_grad();
        var (x, y) = Batch(4096, new torch.Generator((ulong)seed + 17));
        OutputVariance = y.var().to_type(ScalarType.Float64).item<double>() is var v and > 0 ? v : 1.0;
    }

    /// d: input and output features.
    public int Width { get; }
    /// Steps per sequence.
    public int Time { get; }
    /// The element type of the batches (and of the teacher).
    public ScalarType DType { get; }

    /// <summary>The teacher attention, with its weights.</summary>
    public Graph Teacher { get; }

    /// The variance of the teacher's outputs (1 when it is not positive): the loss of predicting zero, by which
    /// <see cref="Loss"/> divides.
    public double OutputVariance { get; }

    /// Inputs x ~ N(0, I) [size, Time, Width] and the teacher's outputs on them [size, Time, Width].
    public (Tensor Input, Tensor Target) Batch(int size, torch.Generator random)
    {
        var x = randn(size, Time, Width, dtype: DType, generator: random);
        using var _ = no_grad();
        return (x, teacher.forward(x));
    }

    /// <summary>Output and target [batch, time, width]; any other output shape is refused.</summary>
    public Tensor Loss(Tensor output, Tensor target)
    {
        OutputShape.Require(ToString(), output.shape, target.shape);
        return (output - target).Squared().mean().Over(OutputVariance);
    }

    /// "TeacherStudentTask(width d, time T)".
    public override string ToString() => $"{nameof(TeacherStudentTask)}(width {Width}, time {Time})";
}
