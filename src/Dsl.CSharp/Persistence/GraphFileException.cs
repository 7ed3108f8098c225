namespace Duality.Persistence;

/// <summary>A graph file that cannot be read or written: what is wrong, where, and what to do.</summary>
public sealed class GraphFileException : Exception
{
    /// <summary>A file that cannot be read ("cannot read graph file '...': problem").</summary>
    public GraphFileException(string path, string problem, string hint, Exception? inner = null)
        : this("read", path, problem, hint, inner)
    {
    }

    private GraphFileException(string verb, string path, string problem, string hint, Exception? inner)
        : base($"cannot {verb} graph file '{path}': {problem}\n  hint: {hint}", inner)
    {
        Path = path;
        Problem = problem;
        Hint = hint;
    }

    /// <summary>A file that cannot be written ("cannot write graph file '...': problem").</summary>
    public static GraphFileException CannotWrite(string path, string problem, string hint, Exception? inner = null) =>
        new("write", path, problem, hint, inner);

    /// The path of the file, as given.
    public string Path { get; }

    /// What is wrong, such as "the file is truncated".
    public string Problem { get; }

    /// What to do about it.
    public string Hint { get; }
}

/// <summary>
/// A node record whose fields graph files cannot hold: a fault of this library (or of a new node kind),
/// never of a file, so it is not turned into a <see cref="GraphFileException"/>.
/// </summary>
internal sealed class GraphFileBugException(string message) : InvalidOperationException("bug in graph files: " + message);
