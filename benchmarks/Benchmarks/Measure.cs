using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Duality.Benchmarks;

/// <summary>One measured configuration: times of repeated runs after a warm-up, and a throughput.</summary>
public sealed record Measurement(string Group, string Configuration, string Mode, double MedianMs, double MinMs, string Throughput)
{
    public static Measurement Of(string group, string configuration, string mode, int repeats, Action run, Func<double, string>? throughput = null)
    {
        run();
        var times = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var clock = Stopwatch.StartNew();
            run();
            times.Add(clock.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        var median = times[times.Count / 2];
        return new Measurement(group, configuration, mode, median, times[0], throughput?.Invoke(times[0]) ?? "");
    }

    /// <summary>
    /// Several runs measured in turns (one call of each per round, after a warm-up of each), so that every one of them
    /// sees the same moments of a machine whose speed drifts: ratios between them are not skewed by when each ran.
    /// </summary>
    public static Measurement[] Interleaved(int repeats, params (string Group, string Configuration, string Mode, Action Run)[] runs)
    {
        foreach (var run in runs) run.Run();
        var times = runs.Select(_ => new List<double>()).ToArray();
        for (int i = 0; i < repeats; i++)
            for (int r = 0; r < runs.Length; r++)
            {
                var clock = Stopwatch.StartNew();
                runs[r].Run();
                times[r].Add(clock.Elapsed.TotalMilliseconds);
            }
        return runs.Select((run, r) =>
        {
            var sorted = times[r].Order().ToList();
            return new Measurement(run.Group, run.Configuration, run.Mode, sorted[sorted.Count / 2], sorted[0], "");
        }).ToArray();
    }
}

/// <summary>The table printed at the end and its CSV copy.</summary>
public sealed class Report
{
    private readonly List<Measurement> rows = [];
    private readonly List<(string Name, double Value, string Target, bool? Met)> ratios = [];

    public Measurement Add(Measurement m)
    {
        rows.Add(m);
        Console.WriteLine($"  {m.Group,-12} {m.Configuration,-34} {m.Mode,-30} median {m.MedianMs,9:0.00} ms  min {m.MinMs,9:0.00} ms  {m.Throughput}");
        return m;
    }

    public void Ratio(string name, double value, string target, bool met)
    {
        ratios.Add((name, value, target, met));
        Console.WriteLine($"  ratio: {name} = {value:0.00} (target {target}: {Verdict(met)})");
    }

    /// <summary>A ratio shown for context, with no target.</summary>
    public void Context(string name, double value)
    {
        ratios.Add((name, value, "-", null));
        Console.WriteLine($"  ratio: {name} = {value:0.00}");
    }

    private static string Verdict(bool? met) => met switch { true => "met", false => "NOT met", null => "context" };

    public void Print(long peakBytes)
    {
        Console.WriteLine();
        Console.WriteLine($"{"group",-12} {"configuration",-34} {"mode",-30} {"median ms",10} {"min ms",10}  throughput");
        foreach (var m in rows)
            Console.WriteLine($"{m.Group,-12} {m.Configuration,-34} {m.Mode,-30} {m.MedianMs,10:0.00} {m.MinMs,10:0.00}  {m.Throughput}");
        Console.WriteLine();
        foreach (var r in ratios) Console.WriteLine($"{r.Name,-70} {r.Value,8:0.00}  target {r.Target,-10} {Verdict(r.Met)}");
        Console.WriteLine($"peak working set: {peakBytes / (1 << 20)} MiB");
    }

    public void WriteCsv(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var csv = new StringBuilder("group,configuration,mode,median_ms,min_ms,throughput\n");
        foreach (var m in rows)
            csv.AppendLine(string.Join(",", Quote(m.Group), Quote(m.Configuration), Quote(m.Mode),
                m.MedianMs.ToString("0.000", CultureInfo.InvariantCulture), m.MinMs.ToString("0.000", CultureInfo.InvariantCulture), Quote(m.Throughput)));
        csv.AppendLine();
        csv.AppendLine("ratio,value,target,met");
        foreach (var r in ratios)
            csv.AppendLine(string.Join(",", Quote(r.Name), r.Value.ToString("0.000", CultureInfo.InvariantCulture), Quote(r.Target), Verdict(r.Met)));
        File.WriteAllText(path, csv.ToString());
    }

    private static string Quote(string s) => "\"" + s.Replace("\"", "\"\"") + "\"";
}
