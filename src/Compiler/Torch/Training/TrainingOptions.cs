using System.Globalization;

namespace Duality.Training;

/// <summary>The optimizer <see cref="Trainer.Train"/> uses.</summary>
public enum OptimizerKind
{
    /// <summary>Adam; a weight decay is added to the gradient as an L2 penalty.</summary>
    Adam,

    /// <summary>AdamW: Adam with the weight decay applied to the parameters directly (decoupled).</summary>
    AdamW,
}

/// <summary>How the learning rate changes over the steps.</summary>
public enum Schedule
{
    /// <summary>The learning rate stays at <see cref="TrainingOptions.LearningRate"/>.</summary>
    Constant,

    /// <summary>Cosine decay: eta_t = eta (1 + cos(pi (t - 1) / Steps)) / 2 at step t = 1 .. Steps, the full rate at the first step, falling towards 0.</summary>
    Cosine,
}

/// <summary>
/// How <see cref="Trainer.Train"/> runs. Every option is checked before the first step and before any file
/// is touched; an invalid one raises an <see cref="ArgumentException"/> whose ParamName is the option's name.
/// </summary>
public sealed record TrainingOptions
{
    /// <summary>Optimizer steps, at least 1.</summary>
    public int Steps { get; init; } = 1000;

    /// <summary>Sequences per step, at least 1.</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>The peak learning rate, finite and greater than 0.</summary>
    public double LearningRate { get; init; } = 3e-3;

    /// Adam (the default) or AdamW; <see cref="WeightDecay"/> is Adam's L2 penalty or AdamW's decoupled decay.
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.Adam;

    /// <summary>Finite and at least 0 (0: none).</summary>
    public double WeightDecay { get; init; }

    /// The learning rate over the steps: cosine decay from <see cref="LearningRate"/> to 0 (the default), or constant.
    public Schedule Schedule { get; init; } = Schedule.Cosine;

    /// <summary>Seeds torch's global generator and the batches; any value.</summary>
    public int Seed { get; init; }

    /// <summary>When set (finite and greater than 0), rescales the gradients before each step so their joint norm is at most this.</summary>
    public double? MaxGradientNorm { get; init; }

    /// <summary>Record the loss every this many steps (at least 1); the first and last steps are always recorded.</summary>
    public int RecordEvery { get; init; } = 10;

    /// <summary>Writes "step,loss" here when set: a file path, not a directory. (Pictures of the losses: Duality.Plots.)</summary>
    public string? LossCsv { get; init; }

    /// <summary>
    /// Told after every step, on the training thread, in increasing steps ending at <see cref="Steps"/>. Null (the
    /// default): silent; the library itself never writes to the console.
    /// </summary>
    public IProgress<TrainingProgress>? Progress { get; init; }

    /// <summary>
    /// Throws unless every option is valid: the <see cref="ArgumentException"/> of the one invalid option, or, when several
    /// are, one that lists them all and names the first.
    /// </summary>
    internal void Validate()
    {
        var problems = Problems().ToList();
        if (problems.Count == 1) throw problems[0].Exception();
        if (problems.Count > 1)
            throw new ArgumentException($"{problems.Count} invalid training options:\n" + string.Join("\n", problems.Select(p => "  " + p.Text)),
                problems[0].Option);
    }

    /// <summary>What is wrong with one option, and the fix; <see cref="Value"/> is set for a value out of range.</summary>
    private sealed record Problem(string Option, string Text, object? Value = null)
    {
        public ArgumentException Exception() =>
            Value is null ? new ArgumentException(Text, Option) : new ArgumentOutOfRangeException(Option, Value, Text);
    }

    /// <summary>Every invalid option, in declaration order (none: valid).</summary>
    private IEnumerable<Problem> Problems()
    {
        if (Steps < 1)
            yield return Range(nameof(Steps), Steps, "at least 1 (the number of optimizer steps)", "set Steps to a positive count, e.g. Steps = 1000");
        if (BatchSize < 1)
            yield return Range(nameof(BatchSize), BatchSize, "at least 1 (sequences per step)", "set BatchSize to a positive size, e.g. BatchSize = 64");
        if (!(double.IsFinite(LearningRate) && LearningRate > 0))
            yield return Range(nameof(LearningRate), LearningRate, "a finite number greater than 0",
                "set LearningRate to a small positive rate, e.g. LearningRate = 3e-3");
        if (!Enum.IsDefined(Optimizer))
            yield return Range(nameof(Optimizer), Optimizer, $"one of {Names<OptimizerKind>()}", "choose one of those values");
        if (!(double.IsFinite(WeightDecay) && WeightDecay >= 0))
            yield return Range(nameof(WeightDecay), WeightDecay, "a finite number, 0 or more",
                "set WeightDecay = 0 for none, or a small positive value such as 1e-2");
        if (!Enum.IsDefined(Schedule))
            yield return Range(nameof(Schedule), Schedule, $"one of {Names<Schedule>()}", "choose one of those values");
        if (MaxGradientNorm is { } norm && !(double.IsFinite(norm) && norm > 0))
            yield return Range(nameof(MaxGradientNorm), norm, "null (no clipping) or a finite number greater than 0",
                "set MaxGradientNorm = null to train without clipping, or a positive norm such as 1.0");
        if (RecordEvery < 1)
            yield return Range(nameof(RecordEvery), RecordEvery, "at least 1 (record the loss every this many steps)",
                "set RecordEvery = 1 to record every step, or a larger interval");
        if (PathProblem(nameof(LossCsv), LossCsv, "loss.csv") is { } csv) yield return csv;
    }

    private static Problem Range(string option, object value, string allowed, string fix) =>
        new(option, $"TrainingOptions.{option} is {Show(value)}; it must be {allowed}. Fix: {fix}.", value);

    private static string Show(object value) => value switch
    {
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        Enum e => $"{e.GetType().Name} value {Convert.ToInt64(e, CultureInfo.InvariantCulture)}",
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "null",
    };

    private static string Names<T>() where T : struct, Enum => string.Join(", ", Enum.GetNames<T>().Select(n => $"{typeof(T).Name}.{n}"));

    /// <summary>
    /// Why a path cannot be written, judged without touching the file system: empty, malformed, a directory, or under
    /// a file. Permissions are learned only by opening the file, which <see cref="Trainer.Train"/> does before the first step.
    /// </summary>
    private static Problem? PathProblem(string option, string? path, string example)
    {
        if (path is null) return null;
        Problem Problem(string what, string fix) => new(option, $"TrainingOptions.{option} is '{path}'; {what}. Fix: {fix}.");
        var none = $"set {option} = null to write none";
        if (string.IsNullOrWhiteSpace(path)) return Problem("it must be a file path", $"give a file path such as \"{example}\", or {none}");
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            return Problem($"it is not a valid path ({e.Message})", $"give a file path such as \"{example}\"");
        }
        if (Directory.Exists(full) || path.EndsWith(Path.DirectorySeparatorChar) || path.EndsWith(Path.AltDirectorySeparatorChar))
            return Problem("it names a directory, and a file is needed", $"add a file name, e.g. \"{Path.Combine(path, example)}\"");
        for (var folder = Path.GetDirectoryName(full); !string.IsNullOrEmpty(folder); folder = Path.GetDirectoryName(folder))
        {
            if (File.Exists(folder))
                return Problem($"its folder '{folder}' is a file, so nothing can be written under it", "choose a path in a directory");
            if (Directory.Exists(folder)) break;
        }
        return null;
    }
}
