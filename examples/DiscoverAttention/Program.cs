// Do gated RNNs trained by gradient descent discover attention? Students of the paper's layer are
// trained to imitate a random causal linear attention teacher (d = 3), for numbers of recurrent
// neurons around d(d+1)/2 + d = 9, and read afterwards: their losses, eigenvalues, pruning, and the
// rank of the quadratic forms their memory neurons store. Then in-context linear regression against
// the best one-step gradient-descent predictor, and baselines.
//   dotnet run --project examples/DiscoverAttention -c Release [-- --steps 30000 --seeds 3]
using System.Globalization;
using Duality;
using Duality.Plots;
using Duality.Training;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

int Argument(string name, int fallback) =>
    args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() is { } v && int.TryParse(v, out var n) ? n : fallback;
var steps = Argument("--steps", 5000);
var seeds = Argument("--seeds", 2);
const int d = 3;
var threshold = d * (d + 1) / 2 + d;
Duality.Runtime.Allocation.KeepLargeAllocations();

Console.WriteLine($"teacher-student, d = {d} (threshold d(d+1)/2 + d = {threshold}), {steps} Adam steps (3e-3, cosine), batch 64, T = 10, {seeds} seeds");
var task = new TeacherStudentTask(d, seed: 7, dtype: ScalarType.Float64);
var options = new TrainingOptions { Steps = steps, LearningRate = 3e-3, RecordEvery = Math.Max(1, steps / 200) };
var teacherTensor = Analysis.CubicTensor(task.Teacher);
Console.WriteLine($"{"N",3} {"seed",4} {"loss",10} {"pruned",10} {"near 0",7} {"near 1",7} {"other",6} {"rank",5} {"distance",9} {"recovered",10} {"steps/s",8}");
var curves = new List<Series>();
GatedRnnReading? lastReading = null;
Duality.Ir.Graph? lastTrained = null;
var rows = new List<string> { "task,neurons,seed,loss,pruned_loss,near_zero,near_one,other,rank,tensor_distance,recovered_attention_error" };
foreach (var neurons in new[] { 4, 6, 8, threshold, 12, 16 })
    for (int seed = 0; seed < seeds; seed++)
    {
        var student = Students.GatedRnn(d, neurons, 2 * d * d, d, seed).Compile(new CompileOptions { DType = ScalarType.Float64, Seed = seed });
        var result = Train($"N = {neurons}, seed {seed}", student, task, options with { Seed = seed });
        var trained = student.ToGraph();
        var reading = Analysis.Read(trained);
        var loss = Analysis.Loss(trained, task);
        var pruned = Analysis.Loss(Analysis.Prune(trained), task);
        var fitted = Analysis.CubicTensor(trained);
        var distance = Analysis.TensorDistance(fitted, teacherTensor);
        var recovered = Duality.Verification.Equivalence.Check(trained, Analysis.AttentionFromTensor(fitted, d),
            new Duality.Verification.EquivalenceOptions { Lengths = [10], Samples = 4 }).MaxRelativeError;
        Console.WriteLine($"{neurons,3} {seed,4} {loss,10:0.00e0} {pruned,10:0.00e0} {reading.NearZero,7} {reading.NearOne,7} {reading.Elsewhere,6} " +
                          $"{reading.QuadraticFormRank,5} {distance,9:0.00e0} {recovered,10:0.00e0} {result.StepsPerSecond,8:0}");
        rows.Add(string.Join(",", "teacher-student", neurons, seed, R(loss), R(pruned), reading.NearZero, reading.NearOne, reading.Elsewhere,
            reading.QuadraticFormRank, R(distance), R(recovered)));
        if (seed == 0) curves.Add(Series.Losses($"N = {neurons}", result));
        if (seed == 0 && neurons == 16) (lastReading, lastTrained) = (reading, trained);
    }
if (lastReading is not null) Console.WriteLine($"learned eigenvalues, N = 16, seed 0:\n{lastReading.HistogramText()}");
Console.WriteLine($"(exact students: loss below 1e-6; the attention teacher stores d(d+1)/2 = {d * (d + 1) / 2} quadratic forms; " +
                  "distance: relative Frobenius distance of the fitted order-3 tensor to the teacher's; " +
                  "recovered: relative error of the attention rebuilt from that tensor against the student)");

Console.WriteLine();
const int dx = 3, dy = 1;
var regression = new InContextRegressionTask(dx, dy, examples: 10, ScalarType.Float64);
var oneStep = regression.OneStepGradientDescentLoss();
Console.WriteLine($"in-context linear regression (d_x = {dx}, d_y = {dy}, 10 examples): best one-step gradient descent loss {oneStep:0.0000} (E|y|^2 = 1)");
foreach (var neurons in new[] { 3, dx * dy + dx, 9 })
{
    var student = Students.GatedRnn(dx + dy, neurons, 2 * (dx + dy) * (dx + dy), dy, 0).Compile(new CompileOptions { DType = ScalarType.Float64 });
    Train($"regression, N = {neurons}", student, regression, options);
    var loss = Analysis.Loss(student.ToGraph(), regression, batch: 16384);
    var (fitted, gradientDescent) = Analysis.RegressionTensors(student.ToGraph(), regression);
    var distance = Analysis.TensorDistance(fitted, gradientDescent);
    Console.WriteLine($"  gated RNN, N = {neurons,2}: loss {loss:0.0000}, order-3 tensor at distance {distance:0.00e0} from one-step gradient descent's");
    rows.Add(string.Join(",", "regression", neurons, 0, R(loss), "", "", "", "", "", R(distance), ""));
}

Console.WriteLine();
Console.WriteLine("baselines on the teacher-student task (seed 0):");
var baselines = new (string, nn.Module<Tensor, Tensor>)[]
{
    ("linear attention", Students.LinearAttention(d, d).Compile(new CompileOptions { DType = ScalarType.Float64 })),
    ("LSTM, 16 units", Students.Lstm(d, 16, d).to(ScalarType.Float64)),
    ("GRU, 16 units", Students.Gru(d, 16, d).to(ScalarType.Float64)),
};
foreach (var (name, model) in baselines)
{
    var result = Train(name, model, task, options);
    Console.WriteLine($"  {name,-17} loss {result.FinalLoss:0.00e0}");
    rows.Add(string.Join(",", "baseline " + name, "", 0, R(result.FinalLoss), "", "", "", "", "", "", ""));
}

Directory.CreateDirectory("artifacts");
File.WriteAllLines(Path.Combine("artifacts", "discover-attention.csv"), rows);
Plots.Losses(Path.Combine("artifacts", "discover-attention.png"), curves, "Teacher-student loss by number of recurrent neurons (seed 0)");
Console.Write("\nwrote artifacts/discover-attention.csv and artifacts/discover-attention.png (loss curves, log scale, seed 0)");
if (lastTrained is not null)
{
    Plots.Eigenvalues(Path.Combine("artifacts", "discover-attention-eigenvalues.png"), lastTrained, EigenvaluePart.Real,
        title: "Learned eigenvalues, N = 16, seed 0");
    Console.Write(" and artifacts/discover-attention-eigenvalues.png");
}
Console.WriteLine();

static string R(double v) => v.ToString("R", CultureInfo.InvariantCulture);

// Training with a progress bar: the library reports through IProgress, the example draws it with Spectre.Console.
static TrainingResult Train(string label, nn.Module<Tensor, Tensor> model, ITrainingTask task, TrainingOptions options) =>
    AnsiConsole.Progress().AutoClear(true)
        .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
        .Start(context =>
        {
            var bar = context.AddTask(Markup.Escape(label), maxValue: options.Steps);
            return Trainer.Train(model, task, options with { Progress = new ProgressBar(bar, label) });
        });

/// <summary>Moves a Spectre.Console progress bar as training reports its steps.</summary>
sealed class ProgressBar(ProgressTask bar, string label) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value)
    {
        bar.Value = value.Step;
        bar.Description = Markup.Escape($"{label}  loss {value.Loss:0.00e0}");
    }
}
