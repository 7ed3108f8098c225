using System.Diagnostics;
using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Training;

public enum OptimizerKind { Adam, AdamW }

public enum Schedule { Constant, Cosine }

/// <summary>A source of training batches and the loss that scores a model on them.</summary>
public interface ITrainingTask
{
    /// <summary>A batch of inputs [batch, time, features] and its target; draw randomness only from <paramref name="random"/>.</summary>
    (Tensor Input, Tensor Target) Batch(int size, torch.Generator random);

    /// <summary>The loss of a model output against the target, a scalar.</summary>
    Tensor Loss(Tensor output, Tensor target);
}

public sealed record TrainingOptions
{
    public int Steps { get; init; } = 1000;
    public int BatchSize { get; init; } = 64;
    public double LearningRate { get; init; } = 3e-3;
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.Adam;
    public double WeightDecay { get; init; }
    public Schedule Schedule { get; init; } = Schedule.Cosine;
    public int Seed { get; init; }

    /// <summary>Record the loss every this many steps.</summary>
    public int RecordEvery { get; init; } = 10;

    /// <summary>Writes "step,loss" here when set.</summary>
    public string? LossCsv { get; init; }

    /// <summary>Draws the loss curve here (PNG) when set.</summary>
    public string? LossPlot { get; init; }

    /// <summary>Progress output; a terminal gets a live bar, anything else a line per tenth of training. Null: silent.</summary>
    public TextWriter? Progress { get; init; } = Console.Out;
}

public sealed record TrainingResult(IReadOnlyList<(int Step, double Loss)> Losses, double FinalLoss, double StepsPerSecond);

/// <summary>Seeded, reproducible training of any TorchSharp module (compiled graphs included) on a task.</summary>
public static class Trainer
{
    public static TrainingResult Train(nn.Module<Tensor, Tensor> model, ITrainingTask task, TrainingOptions? options = null)
    {
        options ??= new TrainingOptions();
        torch.manual_seed(options.Seed);
        var random = new torch.Generator((ulong)options.Seed + 1);
        var parameters = model.parameters().ToList();
        optim.Optimizer optimizer = options.Optimizer == OptimizerKind.AdamW
            ? optim.AdamW(parameters, options.LearningRate, weight_decay: options.WeightDecay)
            : optim.Adam(parameters, options.LearningRate, weight_decay: options.WeightDecay);
        var losses = new List<(int, double)>();
        var clock = Stopwatch.StartNew();
        var live = options.Progress == Console.Out && !Console.IsOutputRedirected;
        double last = double.NaN;
        for (int step = 1; step <= options.Steps; step++)
        {
            using var scope = NewDisposeScope();
            var rate = options.Schedule == Schedule.Cosine
                ? options.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * (step - 1) / options.Steps))
                : options.LearningRate;
            foreach (var group in optimizer.ParamGroups) group.LearningRate = rate;
            var (input, target) = task.Batch(options.BatchSize, random);
            optimizer.zero_grad();
            var loss = task.Loss(model.forward(input), target);
            loss.backward();
            optimizer.step();
            if (step % options.RecordEvery == 0 || step == options.Steps || step == 1)
            {
                last = loss.to_type(ScalarType.Float64).item<double>();
                losses.Add((step, last));
                if (!double.IsFinite(last))
                {
                    options.Progress?.WriteLine($"\nstopped at step {step}: the loss is {last}");
                    break;
                }
            }
            if (options.Progress is { } progress && (live ? step % 5 == 0 || step == options.Steps : step % Math.Max(1, options.Steps / 10) == 0))
                Report(progress, live, step, options.Steps, last, clock.Elapsed);
        }
        if (live) options.Progress!.WriteLine();
        var stepsPerSecond = losses.Count == 0 ? 0 : losses[^1].Item1 / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
        if (options.LossCsv is { } csv)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(csv))!);
            File.WriteAllLines(csv, new[] { "step,loss" }.Concat(losses.Select(l => $"{l.Item1},{l.Item2.ToString("R", CultureInfo.InvariantCulture)}")));
        }
        if (options.LossPlot is { } png) Plot.Lines(png, [("loss", losses.Select(l => ((double)l.Item1, l.Item2)).ToList())]);
        return new TrainingResult(losses, last, stepsPerSecond);
    }

    private static void Report(TextWriter output, bool live, int step, int steps, double loss, TimeSpan elapsed)
    {
        var perSecond = step / Math.Max(elapsed.TotalSeconds, 1e-9);
        var left = TimeSpan.FromSeconds((steps - step) / Math.Max(perSecond, 1e-9));
        var filled = (int)(30.0 * step / steps);
        var line = $"[{new string('#', filled)}{new string('.', 30 - filled)}] step {step}/{steps}  loss {loss:0.000e0}  {perSecond:0.0} steps/s  left {left:mm\\:ss}";
        if (live) output.Write("\r" + line);
        else output.WriteLine(line);
    }
}
