using System.Globalization;

namespace Duality.Training;

/// <summary>
/// Training stopped because the loss of a step was not finite (NaN or infinite). The step's parameters were not
/// updated; the losses recorded until then (this step's included) are in <see cref="Losses"/>, and were written to
/// <see cref="TrainingOptions.LossCsv"/> when it was set.
/// </summary>
public sealed class TrainingDivergedException : Exception
{
    /// The exception for a run whose step <paramref name="step"/> had the loss <paramref name="loss"/>; the message
    /// names both, the last finite step and loss, and <paramref name="hint"/>.
    public TrainingDivergedException(int step, double loss, int? lastFiniteStep, double? lastFiniteLoss, string hint,
        IReadOnlyList<(int Step, double Loss)> losses)
        : base(Render(step, loss, lastFiniteStep, lastFiniteLoss, hint))
    {
        (Step, Loss, LastFiniteStep, LastFiniteLoss, Hint, Losses) = (step, loss, lastFiniteStep, lastFiniteLoss, hint, losses);
    }

    /// <summary>The first step (counting from 1) whose loss was not finite.</summary>
    public int Step { get; }

    /// <summary>That step's loss: NaN or an infinity.</summary>
    public double Loss { get; }

    /// <summary>The last step with a finite loss; null when the first step already diverged.</summary>
    public int? LastFiniteStep { get; }

    /// <summary>The loss at <see cref="LastFiniteStep"/>; null when the first step already diverged.</summary>
    public double? LastFiniteLoss { get; }

    /// <summary>What to change before training again.</summary>
    public string Hint { get; }

    /// <summary>The losses recorded until training stopped, ending with the diverged step.</summary>
    public IReadOnlyList<(int Step, double Loss)> Losses { get; }

    private static string Render(int step, double loss, int? lastFiniteStep, double? lastFiniteLoss, string hint)
    {
        var before = lastFiniteStep is { } s
            ? $"the last finite loss was {lastFiniteLoss!.Value.ToString("G6", CultureInfo.InvariantCulture)} at step {s}"
            : "no step had a finite loss";
        return $"training diverged at step {step}: the loss is {loss.ToString(CultureInfo.InvariantCulture)} ({before})\n  hint: {hint}";
    }
}
