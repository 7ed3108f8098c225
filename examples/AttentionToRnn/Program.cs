// A small multi-head linear transformer, lowered into the gated RNN that computes it exactly
// (arXiv 2309.01775): input gates form key-value products, recurrent neurons with lambda = 1 sum
// them, neurons with lambda = 0 carry the query, output gates multiply the two, a readout sums.
using System.Diagnostics;
using Duality;
using Duality.Builders;
using Duality.Ir;
using Duality.Passes;
using Duality.Verification;
using Duality.Visualization;
using TorchSharp;
using Duality.Streaming;
using static TorchSharp.torch;

const int features = 6, width = 8, heads = 2, key = 3, value = 4;

var transformer = InitializeWeights.Run(
    Model.Input("x", features)
        .Projection(width, name: "embed")
        .Residual(name: "layer1", body: b => b
            .LayerNorm()
            .Attention(heads, key, value, outFeatures: width, name: "attention"))
        .Residual(name: "mlp1", body: b => b.RmsNorm().Projection(2 * width).GELU().Projection(width))
        .Residual(name: "layer2", body: b => b
            .LayerNorm()
            .Attention(heads, key, value, outFeatures: width, decay: 0.97, name: "attention"))
        .Projection(2, name: "readout")
        .Build(),
    seed: 2309);

Section("the linear transformer");
Console.WriteLine(transformer.Summary());

var lowering = LowerAttention.Run(transformer);
var rnn = lowering.Graph;

Section("lowered: every attention became input gate -> diagonal linear recurrence -> output gate -> readout");
foreach (var report in lowering.Lowered)
{
    var formulaCheck = report.RecurrentNeurons == report.FormulaNeurons && report.Parameters == report.FormulaParameters ? "= formula" : "!= formula";
    Console.WriteLine($"{report.Node}: {report.Construction} construction, {report.RecurrentNeurons} recurrent neurons " +
                      $"(formula {report.FormulaNeurons}), {report.OutputNeurons} output neurons, {report.Parameters:N0} dense parameters " +
                      $"(formula {report.FormulaParameters:N0}) {formulaCheck}");
}
foreach (var construction in new[] { Construction.Full, Construction.Compressed })
{
    var alternative = LowerAttention.Run(transformer, construction).Lowered[0];
    Console.WriteLine($"  per layer, the {construction.ToString().ToLowerInvariant()} construction would need {alternative.RecurrentNeurons} neurons " +
                      $"and {alternative.Parameters:N0} parameters");
}
Console.WriteLine();
Console.WriteLine(rnn.Summary());
foreach (var recurrence in rnn.Nodes.OfType<LinearRecurrence>())
    Console.WriteLine($"{recurrence.Name}: {Dot.Eigenvalues(recurrence, recurrence.Lambda!).Replace("\n", "; ")}");
Console.WriteLine($"attention nodes left: {rnn.Nodes.OfType<Attention>().Count()}; " +
                  $"parameters: transformer {ParameterCounts.Total(transformer):N0}, gated RNN {ParameterCounts.Total(rnn):N0}");

Section("equivalence on random sequences");
Console.WriteLine(Equivalence.Check(transformer, rnn, new EquivalenceOptions { Lengths = [1, 16, 128], Samples = 4, Seed = 1 }));
Console.WriteLine(Equivalence.Check(transformer, rnn,
    new EquivalenceOptions { Lengths = [1, 16, 128], Samples = 4, Seed = 1, DType = ScalarType.Float32 }));

Section("float32 error against a float64 reference, as sequences grow");
Console.WriteLine($"{"T",6}  {"attention (float32)",20}  {"gated RNN (float32)",20}  {"attention ms",12}  {"gated RNN ms",12}");
var reference = transformer.Compile(CompileOptions.Float64);
var (attention32, rnn32) = (transformer.Compile(), rnn.Compile());
var generator = new torch.Generator(7);
foreach (var length in new[] { 16, 64, 256, 1024, 4096 })
{
    using var scope = NewDisposeScope();
    using var _ = no_grad();
    var x = randn(1, length, features, dtype: ScalarType.Float64, generator: generator);
    var expected = reference.forward(x);
    var (attentionError, attentionMs) = Measure(() => attention32.forward(x.to_type(ScalarType.Float32)), expected);
    var (rnnError, rnnMs) = Measure(() => rnn32.forward(x.to_type(ScalarType.Float32)), expected);
    Console.WriteLine($"{length,6}  {attentionError,20:0.00e0}  {rnnError,20:0.00e0}  {attentionMs,12:0.0}  {rnnMs,12:0.0}");
}
Console.WriteLine("(relative error: max |y32 - y64| / max |y64|; the RNN form accumulates its state step by step)");
Console.WriteLine($"the gated RNN's fused groups: {string.Join("; ", rnn32.FusedGroups.Where(group => group.Fused > 0))}");

Section("streaming one token at a time (Streamer, float64, no allocation per token)");
var (attentionStream, rnnStream) = (Streamer.Create<double>(transformer), Streamer.Create<double>(rnn));
var tokens = randn(512, features, dtype: ScalarType.Float64, generator: generator).data<double>().ToArray();
double largestGap = 0, largestOutput = 0, attentionTicks = 0, rnnTicks = 0;
for (int t = 0; t < 512; t++)
{
    var token = tokens.AsSpan(t * features, features);
    var clock = Stopwatch.StartNew();
    var fromAttention = attentionStream.Step(token).ToArray();
    attentionTicks += t >= 256 ? clock.Elapsed.TotalMicroseconds : 0;
    clock.Restart();
    var fromRnn = rnnStream.Step(token);
    rnnTicks += t >= 256 ? clock.Elapsed.TotalMicroseconds : 0;
    for (int i = 0; i < fromRnn.Length; i++)
    {
        largestGap = Math.Max(largestGap, Math.Abs(fromRnn[i] - fromAttention[i]));
        largestOutput = Math.Max(largestOutput, Math.Abs(fromAttention[i]));
    }
}
Console.WriteLine($"512 tokens: largest difference {largestGap / largestOutput:0.0e0} (relative to the largest output); " +
                  $"per token (last 256): attention {attentionTicks / 256:0.0} us, gated RNN {rnnTicks / 256:0.0} us " +
                  $"({rnnStream.StructuredLayers} of 2 layers structure-aware)");

Section("picture");
var files = Dot.Write(Path.Combine("artifacts", "attention-to-rnn"), ("linear transformer", transformer), ("gated RNN", rnn));
foreach (var file in files) Console.WriteLine($"wrote {Path.GetFullPath(file)}");
if (files.Count == 1) Console.WriteLine("(install Graphviz, e.g. apt-get install graphviz, to render it to SVG)");

static (double Error, double Milliseconds) Measure(Func<Tensor> run, Tensor expected)
{
    var clock = Stopwatch.StartNew();
    var y = run();
    var elapsed = clock.Elapsed.TotalMilliseconds;
    var error = (y.to_type(ScalarType.Float64) - expected).abs().max().item<double>() / expected.abs().max().item<double>();
    return (error, elapsed);
}

static void Section(string title)
{
    Console.WriteLine();
    Console.WriteLine($"== {title}");
}
