using System.Text;
using Duality.Ir;
using Duality.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Verification;

/// <summary>How to compare two graphs: random inputs (and optionally the user's own), dtype, seed, tolerance.</summary>
public sealed record EquivalenceOptions
{
    /// <summary>Random input batches per sequence length.</summary>
    public int Samples { get; init; } = 4;

    /// Sequences per random input batch (default 2).
    public int Batch { get; init; } = 2;

    /// The sequence lengths T tried (default 1, 2, 7, 32); each gets <see cref="Samples"/> random batches.
    public IReadOnlyList<int> Lengths { get; init; } = [1, 2, 7, 32];

    /// Seeds the random inputs (default 0).
    public int Seed { get; init; }

    /// The element type both graphs are compiled to (default Float64).
    public ScalarType DType { get; init; } = ScalarType.Float64;

    /// <summary>Inputs are drawn from N(0, Scale^2).</summary>
    public double Scale { get; init; } = 1.0;

    /// <summary>Extra inputs to try, each a tensor [batch, time, features] per input name.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, Tensor>> Inputs { get; init; } = [];

    /// <summary>Largest relative error accepted; by default 1e-10 in float64 and 1e-4 in float32.</summary>
    public double? Tolerance { get; init; }

    /// The tolerance used: <see cref="Tolerance"/>, or 1e-10 in Float64 and 1e-4 otherwise.
    public double EffectiveTolerance => Tolerance ?? (DType == ScalarType.Float64 ? 1e-10 : 1e-4);
}

/// <summary>Worst errors of one output over every sample: max |a - b| and that over max |a|.</summary>
/// <param name="Output">The output's node path in the first graph.</param>
/// <param name="MaxAbsoluteError">max |a - b| over every sample (infinite when a difference is NaN).</param>
/// <param name="MaxRelativeError">MaxAbsoluteError / MaxAbsoluteOutput (MaxAbsoluteError when the outputs are all 0).</param>
/// <param name="MaxAbsoluteOutput">max |a| over every sample.</param>
public sealed record OutputError(string Output, double MaxAbsoluteError, double MaxRelativeError, double MaxAbsoluteOutput);

/// <summary>The result of comparing two graphs (or modules) on the same inputs.</summary>
/// <param name="Outputs">One entry per output, in output order.</param>
/// <param name="DType">The element type compared in.</param>
/// <param name="Samples">Input batches tried, random and given.</param>
/// <param name="Batch">Sequences per random batch.</param>
/// <param name="Lengths">The random batches' lengths.</param>
/// <param name="Seed">The inputs' seed.</param>
/// <param name="Tolerance">The largest relative error accepted.</param>
public sealed record EquivalenceReport(IReadOnlyList<OutputError> Outputs, ScalarType DType, int Samples, int Batch,
    IReadOnlyList<int> Lengths, int Seed, double Tolerance)
{
    /// True when every output's largest relative error is at most <see cref="EquivalenceReport.Tolerance"/>.
    public bool Equivalent => Outputs.All(o => o.MaxRelativeError <= Tolerance);

    /// The largest relative error over every output.
    public double MaxRelativeError => Outputs.Max(o => o.MaxRelativeError);

    /// "equivalent" or "NOT equivalent" with the tolerance and the inputs tried, then one line per output with its errors.
    public override string ToString()
    {
        var text = new StringBuilder();
        text.AppendLine($"{(Equivalent ? "equivalent" : "NOT equivalent")} within relative error {Tolerance:0.#e0} ({DType}, " +
                        $"{Samples} input batches of {Batch}, lengths {string.Join(", ", Lengths)}, seed {Seed})");
        foreach (var o in Outputs)
            text.AppendLine($"  {o.Output}: max abs error {o.MaxAbsoluteError:0.00e0}, relative {o.MaxRelativeError:0.00e0} (max |y| {o.MaxAbsoluteOutput:0.00e0})");
        return text.ToString().TrimEnd();
    }
}

/// <summary>
/// Checks that two graphs compute the same function, on random and given inputs. Inputs are matched by
/// name; outputs by position (the report uses the first graph's names).
/// </summary>
public static class Equivalence
{
    /// <summary>Compiles both graphs (same dtype and seed; weights they carry are used) and compares them.</summary>
    public static EquivalenceReport Check(Graph expected, Graph actual, EquivalenceOptions? options = null)
    {
        options ??= new EquivalenceOptions();
        var compile = new CompileOptions { DType = options.DType, Seed = options.Seed };
        return Check(expected.Compile(compile), actual.Compile(compile), options);
    }

    /// <summary>Runs both modules on the same inputs and reports the worst error of each output.</summary>
    public static EquivalenceReport Check(CompiledGraph expected, CompiledGraph actual, EquivalenceOptions? options = null)
    {
        options ??= new EquivalenceOptions();
        CheckInterfaces(expected.Graph, actual.Graph);
        var inputs = expected.Graph.InputNodes.ToArray();
        var outputs = expected.Graph.Outputs.Select(o => expected.Graph[o].Name).ToArray();
        var worstAbsolute = new double[outputs.Length];
        var largest = new double[outputs.Length];
        var samples = 0;
        var generator = new torch.Generator((ulong)options.Seed);
        // each sample's random inputs belong to a scope until it is compared (a temporary only a native call still reads
        // could otherwise be finalised during that call); the scale is a Scalar held to the end likewise
        using var scale = options.Scale.ToScalar();
        void Compare(IReadOnlyDictionary<string, Tensor> named)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var a = expected.Forward(Ordered(named, expected));
            var b = actual.Forward(Ordered(named, actual));
            for (int o = 0; o < outputs.Length; o++)
            {
                var (ya, yb) = (a[o].to_type(ScalarType.Float64), b[o].to_type(ScalarType.Float64));
                var difference = (ya - yb).abs().max().item<double>();
                worstAbsolute[o] = double.IsNaN(difference) ? double.PositiveInfinity : Math.Max(worstAbsolute[o], difference);
                largest[o] = Math.Max(largest[o], ya.abs().max().item<double>());
            }
            samples++;
        }
        foreach (var length in options.Lengths)
            for (int s = 0; s < options.Samples; s++)
            {
                using var sample = NewDisposeScope();
                Compare(inputs.ToDictionary(i => i.Name,
                    i => randn(options.Batch, length, i.Features, dtype: ScalarType.Float64, generator: generator).mul(scale)));
            }
        foreach (var given in options.Inputs) Compare(given);
        var errors = outputs.Select((name, o) => new OutputError(name, worstAbsolute[o],
            largest[o] > 0 ? worstAbsolute[o] / largest[o] : worstAbsolute[o], largest[o])).ToList();
        return new EquivalenceReport(errors, options.DType, samples, options.Batch, options.Lengths, options.Seed, options.EffectiveTolerance);
    }

    private static Tensor[] Ordered(IReadOnlyDictionary<string, Tensor> inputs, CompiledGraph model) =>
        model.Graph.InputNodes.Select(i => inputs.TryGetValue(i.Name, out var x)
            ? x.to(model.DType, model.Device)
            : throw new GraphException(new Diagnostic("missing input", i.Name, i.Describe(), $"give an input named '{i.Name}'"))).ToArray();

    private static void CheckInterfaces(Graph a, Graph b)
    {
        string Describe(Graph g, IEnumerable<NodeId> ids, bool named) =>
            string.Join(", ", ids.Select(i => (named ? g[i].Name + " " : "") + Diagnostic.Sequence(g.WidthOf(i))));
        var (inputsA, inputsB) = (Describe(a, a.Inputs, true), Describe(b, b.Inputs, true));
        var (outputsA, outputsB) = (Describe(a, a.Outputs, false), Describe(b, b.Outputs, false));
        var problems = new List<Diagnostic>();
        if (inputsA != inputsB)
            problems.Add(new Diagnostic("different inputs", "(graph inputs)", "equivalence check",
                "compare graphs with the same input names and widths", inputsA, inputsB));
        if (outputsA != outputsB)
            problems.Add(new Diagnostic("different outputs", "(graph outputs)", "equivalence check",
                "compare graphs with as many outputs, of the same widths in the same order", outputsA, outputsB));
        if (problems.Count > 0) throw new GraphException(problems);
    }
}
