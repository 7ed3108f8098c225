using System.Diagnostics;
using System.Globalization;
using Duality.Ir;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Training;

/// <summary>A source of training batches and the loss that scores a model on them.</summary>
public interface ITrainingTask
{
    /// <summary>A batch of inputs [batch, time, features] and its target; draw randomness only from <paramref name="random"/>.</summary>
    (Tensor Input, Tensor Target) Batch(int size, torch.Generator random);

    /// <summary>
    /// The loss of a model output against the target, a scalar. An output whose shape is not
    /// <see cref="ExpectedOutputShape"/> is refused (a <see cref="GraphException"/>), never broadcast or cut to fit.
    /// </summary>
    Tensor Loss(Tensor output, Tensor target);

    /// <summary>
    /// The shape [batch, time, width] a model's output must have to be scored against this batch; by default the
    /// target's. <see cref="Trainer.Train"/> checks it on one batch before the first step.
    /// </summary>
    long[] ExpectedOutputShape(Tensor input, Tensor target) => target.shape;
}

/// What a finished training run recorded.
/// <param name="Losses">(step, loss) every <see cref="TrainingOptions.RecordEvery"/> steps, the first and last steps included.</param>
/// <param name="FinalLoss">The loss of the last step.</param>
/// <param name="StepsPerSecond">Optimizer steps per second of wall-clock time, over the whole run.</param>
public sealed record TrainingResult(IReadOnlyList<(int Step, double Loss)> Losses, double FinalLoss, double StepsPerSecond);

/// <summary>Seeded, reproducible training of any TorchSharp module (compiled graphs included) on a task.</summary>
public static class Trainer
{
    /// <summary>
    /// Trains <paramref name="model"/> on <paramref name="task"/>. Before the first step and before any file is touched,
    /// the options are checked and one batch is run through the model (in eval mode, without gradients, on batches of
    /// its own) to compare its output with <see cref="ITrainingTask.ExpectedOutputShape"/>; the loss of every step is
    /// checked before the parameters are updated.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="task"/> is null.</exception>
    /// <exception cref="ArgumentException">
    /// An option is invalid (an <see cref="ArgumentOutOfRangeException"/> for a number or enum out of range), with
    /// ParamName the option's name, e.g. "Steps"; <see cref="TrainingOptions.LossCsv"/> cannot be written; or the model has no trainable parameters (ParamName "model").
    /// </exception>
    /// <exception cref="GraphException">The model's output does not have the shape the task scores, at "(model output)".</exception>
    /// <exception cref="TrainingDivergedException">
    /// A step's loss was not finite; the loss file written up to that step is complete.
    /// </exception>
    public static TrainingResult Train(nn.Module<Tensor, Tensor> model, ITrainingTask task, TrainingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(task);
        options ??= new TrainingOptions();
        options.Validate();
        var parameters = model.parameters().ToList();
        if (!parameters.Any(p => p.requires_grad))
            throw new ArgumentException($"the model has no trainable parameters, so {task} cannot train it. " +
                "Fix: pass a model with parameters that require gradients.", nameof(model));
        using var log = LossLog.Open(options.LossCsv);
        CheckOutput(model, task, options);
        log.Begin();

        torch.manual_seed(options.Seed);
        var random = new torch.Generator((ulong)options.Seed + 1);
        optim.Optimizer optimizer = options.Optimizer == OptimizerKind.AdamW
            ? optim.AdamW(parameters, options.LearningRate, weight_decay: options.WeightDecay)
            : optim.Adam(parameters, options.LearningRate, weight_decay: options.WeightDecay);
        var clock = Stopwatch.StartNew();
        double last = double.NaN;
        (int Step, double Loss)? lastFinite = null;
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
            var value = loss.to_type(ScalarType.Float64).item<double>();
            if (!double.IsFinite(value))
            {
                log.Add(step, value);
                throw new TrainingDivergedException(step, value, lastFinite?.Step, lastFinite?.Loss, DivergenceHint(options, lastFinite), log.Losses);
            }
            lastFinite = (step, value);
            if (step % options.RecordEvery == 0 || step == options.Steps || step == 1) log.Add(step, last = value);
            loss.backward();
            if (options.MaxGradientNorm is { } norm) nn.utils.clip_grad_norm_(parameters, norm);
            optimizer.step();
            options.Progress?.Report(new TrainingProgress(step, options.Steps, value, clock.Elapsed));
        }
        var stepsPerSecond = options.Steps / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
        return new TrainingResult(log.Losses, last, stepsPerSecond);
    }

    /// <summary>One batch of the task through the model, without changing either, to compare the output's shape with the task's.</summary>
    private static void CheckOutput(nn.Module<Tensor, Tensor> model, ITrainingTask task, TrainingOptions options)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // eval mode, so that no batch statistics or dropout state change; each module's mode is restored, parents first
        var modes = model.modules().Prepend(model).Select(m => (Module: m, m.training)).ToList();
        model.eval();
        try
        {
            var (input, target) = task.Batch(options.BatchSize, new torch.Generator((ulong)options.Seed + 1));
            OutputShape.Require(task.ToString() ?? task.GetType().Name, model.forward(input).shape, task.ExpectedOutputShape(input, target));
        }
        finally
        {
            foreach (var (module, training) in modes) module.train(training);
        }
    }

    private static string DivergenceHint(TrainingOptions options, (int Step, double Loss)? lastFinite)
    {
        var rate = Number(options.LearningRate);
        if (lastFinite is null)
            return "the loss was not finite before any update: check the task's batches and the model's initial weights " +
                   $"(and the dtype); if they are finite, lower LearningRate ({rate} now)";
        var lower = Number(options.LearningRate / 10);
        var clip = options.MaxGradientNorm is { } norm
            ? $"lower MaxGradientNorm ({norm.ToString("G4", CultureInfo.InvariantCulture)} now)"
            : "clip the gradients, e.g. MaxGradientNorm = 1.0";
        return $"lower LearningRate ({rate} now, try {lower}), or {clip}";
    }

    /// <summary>3e-3, 1e6, 2.5e-1: how rates are written in the options.</summary>
    private static string Number(double value) => value.ToString("0.##e0", CultureInfo.InvariantCulture);
}
