using System.Globalization;

namespace Duality.Training;

/// <summary>
/// The losses of a training run, streamed to the CSV as they are recorded. The file is opened before anything else, so
/// a path that cannot be written fails before any batch, as the option it came from; until <see cref="Begin"/>, an
/// existing file keeps its contents and disposing removes what opening created.
/// </summary>
internal sealed class LossLog : IDisposable
{
    private readonly List<(int Step, double Loss)> losses = [];
    private readonly Opened? opened;
    private StreamWriter? csv;
    private bool begun;

    private LossLog(Opened? opened) => this.opened = opened;

    public IReadOnlyList<(int Step, double Loss)> Losses => losses;

    /// <summary>Opens the CSV (a validated path) without changing it: on failure, what this call created is removed.</summary>
    public static LossLog Open(string? csvPath) =>
        new(csvPath is null ? null : OpenWithoutTruncating(nameof(TrainingOptions.LossCsv), csvPath));

    /// <summary>Training starts: the CSV is emptied and gets its header.</summary>
    public void Begin()
    {
        begun = true;
        if (opened is null) return;
        opened.Stream.SetLength(0);
        csv = new StreamWriter(opened.Stream);
        csv.WriteLine("step,loss");
    }

    public void Add(int step, double loss)
    {
        losses.Add((step, loss));
        csv?.WriteLine($"{step},{loss.ToString("R", CultureInfo.InvariantCulture)}");
    }

    public void Dispose()
    {
        if (!begun) opened?.Undo();
        else csv?.Dispose();
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
