using Duality.Ir;

namespace Duality.Training;

/// <summary>
/// The one rule between a model and a task: the model's output has exactly the shape the task's loss scores,
/// [batch, time, width]. Losses neither broadcast nor pick columns, so a wrong width is an error, never a quietly
/// different objective.
/// </summary>
internal static class OutputShape
{
    /// <summary>Throws a <see cref="GraphException"/> at "(model output)" unless <paramref name="received"/> equals <paramref name="expected"/>.</summary>
    public static void Require(string task, long[] received, long[] expected)
    {
        if (received.SequenceEqual(expected)) return;
        throw new GraphException(new Diagnostic("the model's output does not fit the task", "(model output)", $"scored by {task}",
            Hint(received, expected), Expected: "shape " + Show(expected, received), Received: Show(received, expected)));
    }

    private static string Hint(long[] received, long[] expected)
    {
        if (received.Length != expected.Length || expected.Length != 3)
            return $"the model must return a sequence [batch, time, width]: {Show(expected, received)}";
        if (received[2] != expected[2]) return $"give the student an output width of {expected[2]}";
        if (received[1] != expected[1]) return $"return one output per time step: {expected[1]} steps";
        return $"return one output sequence per input sequence: a batch of {expected[0]}";
    }

    /// <summary>"[batch, time, 2]", with the size of each of batch and time that differs from the other shape's.</summary>
    private static string Show(long[] shape, long[] other)
    {
        if (shape.Length != 3 || other.Length != 3) return $"[{string.Join(", ", shape)}]";
        string Dimension(int i, string name) => shape[i] == other[i] ? name : $"{name} {shape[i]}";
        return $"[{Dimension(0, "batch")}, {Dimension(1, "time")}, {shape[2]}]";
    }
}
