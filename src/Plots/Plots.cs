using System.Globalization;
using Duality.Ir;
using ScottPlot;

namespace Duality.Plots;

/// <summary>Which real number of an eigenvalue lambda a histogram counts.</summary>
public enum EigenvaluePart
{
    /// <summary>|lambda|: the rate at which a neuron's state decays, rotation or not.</summary>
    Modulus,

    /// <summary>Re lambda (lambda itself for a real recurrence).</summary>
    Real,
}

/// <summary>
/// The library's pictures, each written as a PNG of the requested size with a title, labelled axes and, when
/// there are several series, a legend. Drawing is ScottPlot's; this assembly is the only one that depends on it.
/// </summary>
public static class Plots
{
    /// The picture's size in pixels when none is given: 800 by 500.
    public const int DefaultWidth = 800, DefaultHeight = 500;

    /// <summary>Training losses of one or several runs: step against loss, the loss on a log scale (non-positive or non-finite losses are left out).</summary>
    public static void Losses(string path, IEnumerable<Series> runs, string title = "Training loss",
        int width = DefaultWidth, int height = DefaultHeight) =>
        Lines(path, runs, title, "step", "loss (log scale)", logY: true, Alignment.UpperRight, width, height);

    /// <summary>Float32 error against sequence length T, the error on a log scale (zero errors are left out).</summary>
    public static void Float32Error(string path, IEnumerable<Series> series, string title = "Float32 error against sequence length",
        int width = DefaultWidth, int height = DefaultHeight) =>
        Lines(path, series, title, "sequence length T", "max relative error vs float64 (log scale)", logY: true, Alignment.UpperLeft, width, height);

    /// <summary>Latency in milliseconds against context length T.</summary>
    public static void Latency(string path, IEnumerable<Series> series, string title = "Latency against context length",
        int width = DefaultWidth, int height = DefaultHeight) =>
        Lines(path, series, title, "context length T", "latency (ms)", logY: false, Alignment.UpperLeft, width, height);

    /// <summary>
    /// A histogram of the eigenvalues of every <see cref="LinearRecurrence"/> of <paramref name="graph"/> that holds
    /// lambda values (a complex lambda counts by its modulus or real part), one coloured series per recurrence.
    /// </summary>
    /// <exception cref="ArgumentException">No recurrence of the graph holds lambda values (none, only decay branches, or weights not yet set).</exception>
    public static void Eigenvalues(string path, Graph graph, EigenvaluePart part = EigenvaluePart.Modulus, int bins = 20,
        string? title = null, int width = DefaultWidth, int height = DefaultHeight)
    {
        ArgumentNullException.ThrowIfNull(graph);
        Check(path, width, height);
        ArgumentOutOfRangeException.ThrowIfLessThan(bins, 1);
        if (!Enum.IsDefined(part)) throw new ArgumentOutOfRangeException(nameof(part), part, "choose EigenvaluePart.Modulus or EigenvaluePart.Real");
        var groups = graph.Nodes.OfType<LinearRecurrence>().Where(r => r.Lambda is not null)
            .Select(r => (r.Name, Values: Enumerable.Range(0, r.Width).Select(k => Value(r, k, part)).ToArray())).ToList();
        if (groups.Count == 0)
            throw new ArgumentException("the graph has no linear recurrence with lambda values, so there are no eigenvalues to draw. " +
                "Fix: pass a trained graph (e.g. compiled.ToGraph()) whose recurrences have a fixed or learned lambda.", nameof(graph));
        var all = groups.SelectMany(g => g.Values).ToArray();
        var (low, high) = (Math.Min(all.Min(), part == EigenvaluePart.Modulus ? 0 : all.Min()), Math.Max(all.Max(), 1));
        var size = (high - low) / bins;
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        for (int g = 0; g < groups.Count; g++)
        {
            var counts = new int[bins];
            foreach (var v in groups[g].Values) counts[Math.Clamp((int)Math.Floor((v - low) / size), 0, bins - 1)]++;
            var color = palette.GetColor(g);
            var bars = plot.Add.Bars(Enumerable.Range(0, bins).Where(b => counts[b] > 0).Select(b => new Bar
            {
                Position = low + (b + 0.5) * size, Value = counts[b], Size = size * 0.9,
                FillColor = color.WithAlpha(groups.Count > 1 ? 0.6 : 1.0), LineWidth = 0,
            }).ToList());
            bars.LegendText = groups[g].Name;
        }
        var what = part == EigenvaluePart.Modulus ? "|lambda|" : "Re lambda";
        plot.Title(title ?? $"Eigenvalues of the recurrences ({what}, {all.Length} neurons)");
        plot.XLabel(what);
        plot.YLabel("neurons");
        plot.Axes.Margins(bottom: 0);
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        Save(plot, path, groups.Count > 1 ? Alignment.UpperRight : null, width, height);
    }

    private static double Value(LinearRecurrence r, int k, EigenvaluePart part) =>
        r.State != StateKind.Complex ? (part == EigenvaluePart.Modulus ? Math.Abs(r.Lambda![k]) : r.Lambda![k])
        : part == EigenvaluePart.Modulus ? double.Hypot(r.Lambda![k, 0], r.Lambda[k, 1]) : r.Lambda![k, 0];

    private static void Lines(string path, IEnumerable<Series> series, string title, string xLabel, string yLabel, bool logY,
        Alignment legend, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(series);
        ArgumentNullException.ThrowIfNull(title);
        Check(path, width, height);
        var list = series.ToList();
        if (list.Count == 0) throw new ArgumentException("no series to draw. Fix: give at least one series.", nameof(series));
        if (list.Any(s => s is null)) throw new ArgumentNullException(nameof(series), "a series is null");
        var plot = new Plot();
        double lowest = double.PositiveInfinity, highest = double.NegativeInfinity;
        foreach (var s in list)
        {
            var points = s.X.Zip(s.Y).Where(p => double.IsFinite(p.First) && double.IsFinite(p.Second) && (!logY || p.Second > 0))
                .Select(p => (p.First, logY ? Math.Log10(p.Second) : p.Second)).ToArray();
            foreach (var (_, y) in points) (lowest, highest) = (Math.Min(lowest, y), Math.Max(highest, y));
            var line = plot.Add.Scatter(points.Select(p => p.First).ToArray(), points.Select(p => p.Item2).ToArray());
            line.LegendText = s.Name;
            line.MarkerSize = points.Length > 40 ? 0 : 5;
            line.LineWidth = 2;
        }
        if (logY)
        {
            // values are drawn as log10(y): label the ticks with y itself, at whole powers of ten (minor ticks between)
            // when the data span two decades or more, else wherever the automatic ticks fall
            var decades = highest - lowest >= 2;
            var ticks = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                IntegerTicksOnly = decades,
                LabelFormatter = y => Math.Pow(10, y).ToString(decades ? "0.#e0" : "G2", CultureInfo.InvariantCulture),
            };
            plot.Axes.Left.TickGenerator = ticks;
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        Save(plot, path, list.Count > 1 ? legend : null, width, height);
    }

    private static void Check(string path, int width, int height)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 100);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 100);
    }

    /// <summary>Writes the PNG, with a legend at <paramref name="legend"/> (null: none, for a single series).</summary>
    private static void Save(Plot plot, string path, Alignment? legend, int width, int height)
    {
        if (legend is { } corner) plot.ShowLegend(corner); else plot.HideLegend();
        var folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(folder)) Directory.CreateDirectory(folder);
        plot.SavePng(path, width, height);
    }
}
