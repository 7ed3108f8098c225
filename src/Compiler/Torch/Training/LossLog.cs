using System.Globalization;

namespace Duality.Training;

/// <summary>
/// The losses of a training run, streamed to the CSV as they are recorded and drawn to the PNG when the run ends,
/// however it ends. Both files are opened before anything else, so a path that cannot be written fails before any
/// batch, as the option it came from; until <see cref="Begin"/>, existing files keep their contents and disposing
/// removes what opening created.
/// </summary>
internal sealed class LossLog : IDisposable
{
    private readonly List<(int Step, double Loss)> losses = [];
    private readonly IReadOnlyList<Opened> opened;
    private readonly string? plot;
    private StreamWriter? csv;
    private bool begun;

    private LossLog(IReadOnlyList<Opened> opened, string? plot) => (this.opened, this.plot) = (opened, plot);

    public IReadOnlyList<(int Step, double Loss)> Losses => losses;

    /// <summary>Opens both files (validated paths) without changing them, or neither: on failure, what this call created is removed.</summary>
    public static LossLog Open(string? csvPath, string? plotPath)
    {
        var opened = new List<Opened>();
        try
        {
            foreach (var (option, path) in new[] { (nameof(TrainingOptions.LossCsv), csvPath), (nameof(TrainingOptions.LossPlot), plotPath) })
                if (path is not null) opened.Add(OpenWithoutTruncating(option, path));
        }
        catch
        {
            for (int i = opened.Count - 1; i >= 0; i--) opened[i].Undo();
            throw;
        }
        return new LossLog(opened, plotPath);
    }

    /// <summary>Training starts: both files are emptied and the CSV gets its header.</summary>
    public void Begin()
    {
        begun = true;
        foreach (var file in opened) file.Stream.SetLength(0);
        csv = opened.Count > 0 && opened[0].Option == nameof(TrainingOptions.LossCsv) ? new StreamWriter(opened[0].Stream) : null;
        if (plot is not null) opened[^1].Stream.Dispose();
        csv?.WriteLine("step,loss");
    }

    public void Add(int step, double loss)
    {
        losses.Add((step, loss));
        csv?.WriteLine($"{step},{loss.ToString("R", CultureInfo.InvariantCulture)}");
    }

    public void Dispose()
    {
        if (!begun)
        {
            for (int i = opened.Count - 1; i >= 0; i--) opened[i].Undo();
            return;
        }
        csv?.Dispose();
        if (plot is not null) Plot.Lines(plot, [("loss", losses.Select(l => ((double)l.Step, l.Loss)).ToList())]);
    }

    /// <summary>A file opened for writing, and what opening it created: the file itself unless it existed, and folders (deepest first).</summary>
    private sealed record Opened(string Option, FileStream Stream, string Path, bool Existed, IReadOnlyList<string> CreatedFolders)
    {
        public void Undo()
        {
            Stream.Dispose();
            if (!Existed) File.Delete(Path);
            RemoveFolders(CreatedFolders);
        }
    }

    private static Opened OpenWithoutTruncating(string option, string path)
    {
        var full = Path.GetFullPath(path);
        var existed = File.Exists(full);
        var missing = new List<string>();
        for (var folder = Path.GetDirectoryName(full); !string.IsNullOrEmpty(folder) && !Directory.Exists(folder); folder = Path.GetDirectoryName(folder))
            missing.Add(folder);
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            return new Opened(option, new FileStream(full, FileMode.OpenOrCreate, FileAccess.Write, FileShare.Read), full, existed, missing);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            RemoveFolders(missing);
            throw new ArgumentException($"TrainingOptions.{option} is '{path}', which cannot be written ({e.Message}). " +
                $"Fix: choose a writable location, or set {option} = null to write none.", option, e);
        }
    }

    /// <summary>Removes folders this run created, deepest first, each only if still empty.</summary>
    private static void RemoveFolders(IReadOnlyList<string> folders)
    {
        foreach (var folder in folders)
            if (Directory.Exists(folder) && !Directory.EnumerateFileSystemEntries(folder).Any()) Directory.Delete(folder);
    }
}
