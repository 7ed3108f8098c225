namespace Duality.Training;

/// <summary>
/// Where a training run is, reported through <see cref="TrainingOptions.Progress"/> after each step: <see cref="Step"/>
/// of <see cref="Steps"/> done, the step's <see cref="Loss"/>, and the time since the first step began.
/// </summary>
/// <param name="Step">The step just done, from 1.</param>
/// <param name="Steps">The steps of the run.</param>
/// <param name="Loss">That step's loss.</param>
/// <param name="Elapsed">Wall-clock time since the first step began.</param>
public sealed record TrainingProgress(int Step, int Steps, double Loss, TimeSpan Elapsed)
{
    /// <summary>Steps per second so far.</summary>
    public double StepsPerSecond => Step / Math.Max(Elapsed.TotalSeconds, 1e-9);
}
