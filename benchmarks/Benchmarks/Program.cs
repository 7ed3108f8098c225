// Benchmarks of the execution paths: dotnet run --project benchmarks/Benchmarks -c Release [-- --quick]
// Prints a table (median and min of repeated runs, throughput), the target ratios, peak memory,
// and writes artifacts/benchmarks.csv.
using System.Diagnostics;
using Duality;
using Duality.Benchmarks;
using Duality.Builders;
using Duality.Ir;
using Duality.Passes;
using TorchSharp;
using static TorchSharp.torch;

var quick = args.Contains("--quick");
var only = args.SkipWhile(a => a != "--only").Skip(1).FirstOrDefault();
bool Selected(string section) => only is null || section.StartsWith(only, StringComparison.OrdinalIgnoreCase);
var warmPages = !args.Contains("--fresh-pages") && Duality.Runtime.Allocation.KeepLargeAllocations();
var repeats = quick ? 5 : 15;
var report = new Report();
torch.set_num_threads(Environment.ProcessorCount);
var generator = new torch.Generator(1);
Console.WriteLine($"{(quick ? "quick" : "full")} run, {repeats} repeats after a warm-up, {Environment.ProcessorCount} cores, float32, " +
                  (warmPages ? "large allocations kept warm (Allocation.KeepLargeAllocations; --fresh-pages to compare)" : "fresh pages for large tensors"));
// libgomp reads its waiting policy when libtorch loads: say which one these timings ran under
var (spinCount, waitPolicy) = (Environment.GetEnvironmentVariable("GOMP_SPINCOUNT"), Environment.GetEnvironmentVariable("OMP_WAIT_POLICY"));
Console.WriteLine("libtorch's OpenMP workers: " + (spinCount is null && waitPolicy is null
    ? "libgomp's default wait (they spin after each operation; the library's kernels run on them, README: performance)"
    : $"GOMP_SPINCOUNT={spinCount ?? "unset"}, OMP_WAIT_POLICY={waitPolicy ?? "unset"}"));

// --- memory bandwidth and the diagonal recurrence, B = 8, N = 4096, T = 1024
if (Selected("recurrence"))
{
Console.WriteLine("\n== linear recurrence h_t = lambda * h_{t-1} + u_t");
const int batch = 8, width = 4096, time = 1024;
var source = randn(batch, time, width, generator: generator);
var target = empty_like(source);
double bytes = 2.0 * source.numel() * 4;
var copy = report.Add(Measurement.Of("memory", $"copy [{batch}, {time}, {width}]", "Tensor.copy_", repeats,
    () => target.copy_(source), ms => $"{bytes / ms / 1e6:0.0} GB/s"));
var copyRate = bytes / copy.MinMs / 1e6;

var lambda = rand(width, generator: generator) * 0.5 + 0.45;
var recurrence = Model.Input("u", width).LinearRecurrence(trainable: false, lambda: Values(lambda)).Build();
var fused = recurrence.Compile(new CompileOptions { Seed = 1 });
var stepLoop = recurrence.Compile(new CompileOptions { Seed = 1, Execution = ExecutionMode.TorchOps });
Func<double, string> scanRate = ms => $"{bytes / ms / 1e6:0.0} GB/s";
var kernel = report.Add(Measurement.Of("recurrence", $"B {batch}, N {width}, T {time}", "fused SIMD kernel", repeats,
    () => { using var _ = no_grad(); using var s = NewDisposeScope(); fused.forward(source); }, scanRate));
var perStep = report.Add(Measurement.Of("recurrence", $"B {batch}, N {width}, T {time}", "TorchSharp per-step loop", repeats,
    () => { using var _ = no_grad(); using var s = NewDisposeScope(); stepLoop.forward(source); }, scanRate));
var cumsum = report.Add(Measurement.Of("recurrence", $"B {batch}, N {width}, T {time}", "cumsum of lambda^-t u (timing only)", repeats,
    () =>
    {
        using var _ = no_grad();
        using var s = NewDisposeScope();
        var powers = lambda.log().unsqueeze(0) * arange(time, dtype: ScalarType.Float32).unsqueeze(1);
        ((source * (-powers).exp()).cumsum(1) * powers.exp()).Dispose();
    }, scanRate));
var trainable = Model.Input("u", width).LinearRecurrence(lambda: Values(lambda)).Build().Compile(new CompileOptions { Seed = 1 });
var sourceGrad = source.clone().requires_grad_(true);
var backward = report.Add(Measurement.Of("recurrence", $"B {batch}, N {width}, T {time}", "fused forward + backward", repeats,
    () =>
    {
        using var s = NewDisposeScope();
        trainable.zero_grad();
        trainable.forward(sourceGrad).sum().backward();
        sourceGrad.grad!.Dispose();
        sourceGrad.grad = null;
    }));
report.Ratio("recurrence kernel rate / copy rate", bytes / kernel.MinMs / 1e6 / copyRate, ">= 0.5", bytes / kernel.MinMs / 1e6 / copyRate >= 0.5);
report.Ratio("per-step loop time / kernel time", perStep.MinMs / kernel.MinMs, ">= 4", perStep.MinMs / kernel.MinMs >= 4);
report.Ratio("cumsum formulation time / kernel time", cumsum.MinMs / kernel.MinMs, ">= 4", cumsum.MinMs / kernel.MinMs >= 4);
report.Ratio("forward+backward time / forward time", backward.MinMs / kernel.MinMs, "<= 3", backward.MinMs / kernel.MinMs <= 3);
source.Dispose(); target.Dispose(); sourceGrad.Dispose();
}

// --- attention and its lowered gated RNN: d = 64, 4 heads of 16, B = 8
var attention = InitializeWeights.Run(Model.Input("x", 64).Attention(4, 16, 16, outFeatures: 64, name: "attention").Build(), 1);
var lowered = LowerAttention.ToGatedRnn(attention);
var attentionModel = attention.Compile();
var masked = attention.Compile(new CompileOptions { Execution = ExecutionMode.TorchOps });
var rnn = lowered.Compile();
var denseRnn = lowered.Compile(new CompileOptions { Execution = ExecutionMode.PerNode });
if (Selected("attention"))
{
Console.WriteLine("\n== causal linear attention (d 64, 4 heads of 16, B 8) and its lowered gated RNN");
foreach (var length in quick ? new[] { 1024 } : new[] { 1024, 4096 })
{
    var x = randn(8, length, 64, generator: generator);
    var configuration = $"T {length}";
    var fast = report.Add(Measurement.Of("attention", configuration, "fused recurrent loop (no gradients)", repeats, () => Run(attentionModel, x)));
    var chunkedForm = report.Add(Measurement.Of("attention", configuration, "chunked (gradients recorded)", repeats,
        () => { using var s = NewDisposeScope(); attentionModel.forward(x); }));
    report.Add(Measurement.Of("attention", configuration, "masked T x T", Math.Min(repeats, 3), () => Run(masked, x)));
    var structured = report.Add(Measurement.Of("lowered RNN", configuration, "structure-aware fused layer", repeats, () => Run(rnn, x)));
    report.Add(Measurement.Of("lowered RNN", configuration, "dense, node by node (PerNode)", Math.Min(repeats, 3), () => Run(denseRnn, x)));
    var fastest = Math.Min(fast.MinMs, chunkedForm.MinMs);
    report.Ratio($"lowered RNN / fastest attention at T {length}", structured.MinMs / fastest, "<= 2", structured.MinMs / fastest <= 2);
    x.Dispose();
}
// two more forms at T 1024: an input-dependent decay (gated linear attention), whose lowered form splits the state in two
// recurrences, and the compressed construction (d (d + 1) / 2 + d neurons per head, the smaller one at d 16, 4 heads of 16),
// which runs as the attention it raises to
var gated = InitializeWeights.Run(Model.Input("x", 64).Attention(4, 16, 16, outFeatures: 64, name: "attention", inputDependentDecay: true).Build(), 1);
CompareLowered("T 1024, input-dependent decay", gated, LowerAttention.ToGatedRnn(gated), "structure-aware fused layer");
var small = InitializeWeights.Run(Model.Input("x", 16).Attention(4, 16, 16, name: "attention").Build(), 1);
CompareLowered("T 1024, d 16, compressed", small, LowerAttention.ToGatedRnn(small, Construction.Compressed), "structure-aware (as the raised attention)");

void CompareLowered(string configuration, Graph attentionGraph, Graph loweredGraph, string structuredMode)
{
    var (attentionModule, structuredRnn) = (attentionGraph.Compile(), loweredGraph.Compile());
    var dense = loweredGraph.Compile(new CompileOptions { Execution = ExecutionMode.PerNode });
    using var x = randn(8, 1024, attentionGraph.InputNodes.First().Features, generator: generator);
    var fast = report.Add(Measurement.Of("attention", configuration, "fused recurrent loop (no gradients)", repeats, () => Run(attentionModule, x)));
    var structured = report.Add(Measurement.Of("lowered RNN", configuration, structuredMode, repeats, () => Run(structuredRnn, x)));
    report.Add(Measurement.Of("lowered RNN", configuration, "dense, node by node (PerNode)", Math.Min(repeats, 3), () => Run(dense, x)));
    report.Context($"lowered RNN / fused attention, {configuration}", structured.MinMs / fast.MinMs);
}
}

// --- step form: per-token latency and allocation
if (Selected("step"))
{
Console.WriteLine("\n== streaming (one token at a time, batch 1)");
var steps = quick ? 2000 : 20000;
var attentionStreamer = StreamerLatency(attentionModel.ToStreamer<float>(), 64, steps, out var attentionStreamerBytes);
var rnnStreamer = StreamerLatency(rnn.ToStreamer<float>(), 64, steps, out var rnnStreamerBytes);
var attentionTensors = StepLatency(attentionModel, 64, quick ? 200 : 1000, out var attentionBytes);
var rnnTensors = StepLatency(rnn, 64, quick ? 200 : 1000, out var rnnBytes);
const string stepConfiguration = "d 64, 4 heads of 16";
report.Add(new Measurement("step", stepConfiguration, "attention, Streamer", attentionStreamer, attentionStreamer, $"{attentionStreamer * 1000:0.0} us, {attentionStreamerBytes:0.###} B allocated per step"));
report.Add(new Measurement("step", stepConfiguration, "lowered RNN, Streamer", rnnStreamer, rnnStreamer, $"{rnnStreamer * 1000:0.0} us, {rnnStreamerBytes:0.###} B allocated per step"));
report.Add(new Measurement("step", stepConfiguration, "attention, tensor StepForm", attentionTensors, attentionTensors, $"{attentionTensors * 1000:0.0} us, {attentionBytes:0} B allocated per step"));
report.Add(new Measurement("step", stepConfiguration, "lowered RNN, tensor StepForm", rnnTensors, rnnTensors, $"{rnnTensors * 1000:0.0} us, {rnnBytes:0} B allocated per step"));
var fastestAttentionStep = Math.Min(attentionStreamer, attentionTensors);
report.Ratio("lowered RNN step latency (Streamer) / fastest attention step", rnnStreamer / fastestAttentionStep, "<= 2", rnnStreamer / fastestAttentionStep <= 2);
report.Ratio("managed bytes allocated per lowered RNN step (Streamer)", rnnStreamerBytes, "0", rnnStreamerBytes == 0);
}

// --- a gated RNN layer against the same layer written by hand with a per-step loop of tensor ops
if (Selected("gated"))
{
Console.WriteLine("\n== gated RNN layer (d 256, N 1024, B 8, T 1024): compiled against hand-written");
const int d = 256, n = 1024;
var layer = InitializeWeights.Run(Model.Input("x", d)
    .Gate(value: v => v.Projection(n), gate: g => g.Projection(n), activation: ActivationKind.Sigmoid)
    .LinearRecurrence(name: "memory")
    .Projection(d, name: "readout")
    .Build(), 1);
var compiled = layer.Compile();
var handWritten = new HandWrittenLayer(compiled);
var input = randn(8, 1024, d, generator: generator);
// the forward pass's products (value, gate, readout): what its GFLOP/s count
var layerFlops = 3 * 2.0 * 8 * 1024 * d * n;
Func<double, string> layerRate = ms => $"{layerFlops / ms / 1e6:0.0} GFLOP/s in the products";
var ours = report.Add(Measurement.Of("gated RNN", "forward", "compiled", repeats, () => Run(compiled, input), layerRate));
var kept = layer.Compile(new CompileOptions { ReuseBuffers = true });
var oursKept = report.Add(Measurement.Of("gated RNN", "forward", "compiled, ReuseBuffers", repeats, () => Run(kept, input), layerRate));
var cell = report.Add(Measurement.Of("gated RNN", "forward", "hand-written per-step cell", repeats,
    () => { using var _ = no_grad(); using var s = NewDisposeScope(); handWritten.Cell(input); }, layerRate));
var hoisted = report.Add(Measurement.Of("gated RNN", "forward", "hand-written, projections hoisted", Math.Min(repeats, 3),
    () => { using var _ = no_grad(); using var s = NewDisposeScope(); handWritten.Hoisted(input); }, layerRate));
var oursBackward = report.Add(Measurement.Of("gated RNN", "forward + backward", "compiled", repeats,
    () => { using var s = NewDisposeScope(); compiled.zero_grad(); compiled.forward(input).sum().backward(); }));
var cellBackward = report.Add(Measurement.Of("gated RNN", "forward + backward", "hand-written per-step cell", repeats,
    () => { using var s = NewDisposeScope(); compiled.zero_grad(); handWritten.Cell(input).sum().backward(); }));
var hoistedBackward = report.Add(Measurement.Of("gated RNN", "forward + backward", "hand-written, projections hoisted", Math.Min(repeats, 3),
    () => { using var s = NewDisposeScope(); compiled.zero_grad(); handWritten.Hoisted(input).sum().backward(); }));
report.Ratio("hand-written per-step cell / compiled, forward", cell.MinMs / ours.MinMs, ">= 4", cell.MinMs / ours.MinMs >= 4);
report.Ratio("hand-written per-step cell / compiled, forward + backward", cellBackward.MinMs / oursBackward.MinMs, ">= 4",
    cellBackward.MinMs / oursBackward.MinMs >= 4);
report.Context("hand-written per-step cell / compiled with ReuseBuffers, forward", cell.MinMs / oursKept.MinMs);
report.Context("hand-written, projections hoisted / compiled, forward", hoisted.MinMs / ours.MinMs);
report.Context("hand-written, projections hoisted / compiled, forward + backward", hoistedBackward.MinMs / oursBackward.MinMs);
var matmulA = randn(2048, 2048, generator: generator);
var matmul = report.Add(Measurement.Of("reference", "matmul 2048^3", "libtorch", repeats, () => matmulA.matmul(matmulA).Dispose(),
    ms => $"{2.0 * 2048 * 2048 * 2048 / ms / 1e6:0.0} GFLOP/s"));
// the layer's three products (value, gate, readout) at that rate: the floor for any implementation using libtorch's matmul
report.Context("compiled forward / its matmuls at the measured matmul rate", ours.MinMs / (layerFlops / (2.0 * 2048 * 2048 * 2048) * matmul.MinMs));
// above 1, no implementation of the forward pass whose products run at libtorch's rate can be 4x the cell
report.Context("4 x the cell's product rate / libtorch's matmul rate (forward)", 4 * matmul.MinMs * layerFlops / (2.0 * 2048 * 2048 * 2048) / cell.MinMs);
if (args.Contains("--peer")) PythonPeer(report, ours, oursBackward);
else Console.WriteLine("  (--peer also runs the Python peer, benchmarks/peer.py, where python3 has torch: a few minutes)");
}

// --- the block families: compiled forward against its roofline (its products at the matmul rate plus its input, output
// and weights at the copy rate, both measured here), forward + backward against forward, and the per-step loop a user writes
if (Selected("blocks"))
{
Console.WriteLine("\n== block families (d 256, state 256, B 8, T 1024; gated linear attention families with 4 heads of k 64, v 64, " +
                  "Mamba-2 with E 512, P 64, N 64), float32");
const int d = 256, batch = 8, time = 1024;
var square = randn(2048, 2048, generator: generator);
using var copySource = randn(batch, time, 4 * d, generator: generator);
using var copyTarget = empty_like(copySource);
var copyMs = Measurement.Of("reference", "copy", "Tensor.copy_", repeats, () => copyTarget.copy_(copySource)).MinMs;
var copyRate = 2.0 * copySource.numel() * 4 / copyMs;           // bytes per ms
Console.WriteLine($"  copy {copyRate / 1e6:0.0} GB/s; the matmul rate is measured per family, in turns with its forward");
using var x = randn(batch, time, d, generator: generator);
var families = new (string Name, Func<SequenceBuilder, SequenceBuilder> Block)[]
{
    ("minGRU", Blocks.MinGru(d)), ("minLSTM", Blocks.MinLstm(d)), ("RG-LRU", Blocks.RgLru()),
    ("Griffin recurrent", Blocks.GriffinRecurrent(d)), ("LRU", Blocks.Lru(d)), ("gated MLP", Blocks.GatedMlp()),
    // on the gated linear attention node: the fused recurrent loop, with gradients one autograd operation with its reverse pass
    ("GLA", Blocks.Gla(4, 64, 64, 16, 16)), ("RetNet", Blocks.RetNet(4, 64, 64)),
    ("Mamba-2", Blocks.Mamba2(512, 64, 64, 1, 4)), ("mLSTM", Blocks.Mlstm(4, 64, 64)),
};
var measured = new Dictionary<string, (Measurement Forward, Measurement Both)>();
foreach (var (name, block) in families)
{
    var graph = InitializeWeights.Run(Model.Input("x", d).Then(block).Build(), 1);
    var model = graph.Compile();
    // the products: every projection, and per gated linear attention the recurrent form that runs without gradients (the
    // fused loop): per step, batch row and head S = diag(a) S + k v^T and y = S^T q, 4 d_k d_v, d_v + 1 when normalised (the
    // normaliser n beside S). With gradients its reverse pass runs three such products (dq forward in time, dk and dv back).
    var flops = graph.Nodes.OfType<Projection>().Sum(p => 2.0 * batch * time * p.InFeatures * p.OutFeatures)
        + graph.Nodes.OfType<GatedLinearAttention>().Sum(RecurrentFlops);
    double RecurrentFlops(GatedLinearAttention a) => 4.0 * batch * a.Heads * time * a.KeyWidth * (a.ValueWidth + (a.Normalised ? 1 : 0));
    var bytes = 4.0 * (batch * time * (d + graph.Widths[graph.Outputs[0].Index]) + ParameterCounts.Total(graph));
    // the same products (bias included) as libtorch runs them at these shapes: the floor of any implementation calling it
    var operands = graph.Nodes.OfType<Projection>().Select(p => (X: randn(batch, time, p.InFeatures, generator: generator),
        W: randn(p.OutFeatures, p.InFeatures, generator: generator), B: p.Bias ? randn(p.OutFeatures, generator: generator) : null)).ToList();
    // the forward, its products alone, the reference matmul and the forward + backward in turns: the roofline's rate is the one of the forward's moments
    var timed = Measurement.Interleaved(repeats,
        ("blocks", name, "compiled forward (no gradients)", () => Run(model, x)),
        ("blocks", name, "its products alone (libtorch)", () =>
        {
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            foreach (var (px, pw, pb) in operands) nn.functional.linear(px, pw, pb);
        }),
        ("reference", name, "matmul 2048^3 (libtorch)", () => square.matmul(square).Dispose()),
        ("blocks", name, "compiled forward + backward", () => { using var scope = NewDisposeScope(); model.zero_grad(); model.forward(x).sum().backward(); }));
    foreach (var (px, pw, pb) in operands) { px.Dispose(); pw.Dispose(); pb?.Dispose(); }
    var forward = report.Add(timed[0]);
    var (products, matmulRate) = (timed[1].MinMs, 2.0 * 2048 * 2048 * 2048 / timed[2].MinMs);
    var (productsMs, trafficMs) = (flops / matmulRate, bytes / copyRate);
    // TorchOps: a per-step loop for the recurrences, the masked T x T form for a gated linear attention (which the
    // allocation guard refuses when its weights would not fit: GLA's [B, H, T, T, d_k])
    var attentionFamily = graph.Nodes.OfType<GatedLinearAttention>().Any();
    Measurement? loop = null;
    try
    {
        loop = report.Add(Measurement.Of("blocks", name, attentionFamily ? "masked T x T form (TorchOps)" : "per-step loop (TorchOps)", Math.Min(repeats, 3),
            () => Run(graph.Compile(new CompileOptions { Execution = ExecutionMode.TorchOps }), x)));
    }
    catch (GraphException e)
    {
        Console.WriteLine($"  {name}: masked T x T form (TorchOps) refused: {Refusal(e)}");
    }
    // what a user writes from the paper's pseudocode: every product inside the loop over steps
    var handWritten = new HandWrittenBlocks(model);
    if (handWritten.For(name) is { } cell)
    {
        using (var _ = no_grad())
        using (var scope = NewDisposeScope())
        {
            var (ours, theirs) = (model.forward(x), cell(x));
            Console.WriteLine($"  {name}: hand-written loop vs compiled, max |difference| / max |y| = {((ours - theirs).abs().max() / ours.abs().max()).item<float>():0.0e0}");
        }
        var user = report.Add(Measurement.Of("blocks", name, "hand-written per-step loop", Math.Min(repeats, 3),
            () => { using var _ = no_grad(); using var scope = NewDisposeScope(); cell(x); }));
        report.Context($"{name}: hand-written per-step loop / compiled forward", user.MinMs / forward.MinMs);
    }
    var both = report.Add(timed[3]);
    var roofline = productsMs + trafficMs;
    Console.WriteLine($"  {name}: roofline {roofline:0.00} ms = products {productsMs:0.00} ms (matmul {matmulRate / 1e6:0.0} GFLOP/s, measured in turns " +
                      $"with the forward) + traffic {trafficMs:0.00} ms; its products alone as libtorch runs them {products:0.00} ms");
    // each gated linear attention alone (its fused loop, no gradients) on inputs of its widths: with the products as
    // libtorch runs them, the measured floor of this block; what the forward spends beyond it is its elementwise nodes
    var alone = graph.Nodes.OfType<GatedLinearAttention>().Select(a => AttentionAloneMs(graph, a)).ToList();
    var (attentionAlone, attentionBoth) = (alone.Sum(a => a.Forward), alone.Sum(a => a.Both));
    if (attentionAlone > 0)
    {
        var attentionFlops = graph.Nodes.OfType<GatedLinearAttention>().Sum(RecurrentFlops);
        var floor = products + attentionAlone + trafficMs;
        Console.WriteLine($"  {name}: its attention alone (fused loop) {attentionAlone:0.00} ms, {attentionFlops / attentionAlone / 1e6:0.0} GFLOP/s; " +
                          $"measured floor (products as libtorch runs them + attention alone + traffic) {floor:0.00} ms");
        report.Context($"{name}: measured floor / roofline", floor / roofline);
        report.Context($"{name}: compiled forward / measured floor", forward.MinMs / floor);
    }
    report.Ratio($"{name}: compiled forward / roofline ({productsMs:0.0} + {trafficMs:0.0} ms)", forward.MinMs / roofline, "<= 1.3", forward.MinMs / roofline <= 1.3);
    // above 1.3, no implementation whose products run as libtorch runs them at these shapes meets the roofline target
    report.Context($"{name}: its products as libtorch runs them / at the matmul rate", products / productsMs);
    report.Context($"{name}: compiled forward / (its products as libtorch runs them + traffic)", forward.MinMs / (products + trafficMs));
    report.Ratio($"{name}: forward + backward / forward", both.MinMs / forward.MinMs, "<= 3", both.MinMs / forward.MinMs <= 3);
    if (attentionAlone > 0)
    {
        // the rest of the block (its forward + backward without the attention's) held as measured, the 3x target leaves the
        // attention's reverse pass 3 forward - rest - loop
        var reverse = attentionBoth - attentionAlone;
        var allowed = 3 * forward.MinMs - (both.MinMs - attentionBoth) - attentionAlone;
        Console.WriteLine($"  {name}: the attention's reverse pass {reverse:0.00} ms ({reverse / attentionAlone:0.00} loops); the 3x target, the rest of the " +
                          $"block as measured, leaves it {allowed:0.00} ms ({allowed / attentionAlone:0.00} loops)");
        report.Context($"{name}: the attention's reverse pass / what the 3x target leaves it", reverse / allowed);
    }
    if (loop is not null) report.Context($"{name}: {(attentionFamily ? "masked form" : "per-step loop")} / compiled forward", loop.MinMs / forward.MinMs);
    measured[name] = (forward, both);
}
// a gated linear attention alone: its query, key, value, log-decay (log sigmoid / 16, GLA's tempered decay) and log
// input gate each an input of its own (contiguous, as the projections feeding it in a block are); its fused loop without
// gradients, and as one autograd operation with its reverse pass
(double Forward, double Both) AttentionAloneMs(Graph graph, GatedLinearAttention a)
{
    var whole = AttentionAlone(graph, a, a.Heads, batch, time, $"{a.Name}: alone, forward + backward (the loop and its reverse pass)");
    // one head of one batch row runs on one thread (a pair at a time), so a machine's other load shifts it least: the
    // loop and its reverse pass against the loop alone, kernel to kernel
    var label = $"{a.Name}: one head, B 1, T {8 * time}, one thread";
    var (oneHead, oneHeadBoth) = AttentionAlone(graph, a, 1, 1, 8 * time, $"{label}: forward + backward");
    report.Context($"{label}: forward + backward / forward", oneHeadBoth / oneHead);
    return whole;
}
(double Forward, double Both) AttentionAlone(Graph graph, GatedLinearAttention a, int heads, int rows, int steps, string label)
{
    int qk = heads * a.KeyWidth, values = heads * a.ValueWidth;
    int decayWidth = a.LogDecay is { } l ? graph.Widths[l.Index] / a.Heads * heads : 0, gateWidth = a.LogInputGate is null ? 0 : heads;
    var inputs = Model.Input("q", qk).Input("k", qk).Input("v", values);
    if (decayWidth > 0) inputs = inputs.Input("d", decayWidth);
    if (gateWidth > 0) inputs = inputs.Input("g", gateWidth);
    var alone = inputs.GatedLinearAttention(heads, a.KeyWidth, a.ValueWidth,
        q => q.From("q"), k => k.From("k"), v => v.From("v"),
        decayWidth == 0 ? null : l => l.From("d").LogSigmoid().Scale(1.0 / 16),
        gateWidth == 0 ? null : g => g.From("g"),
        a.Normalised, a.HeadDecays?.Data.Take(heads).ToArray()).Build().Compile();
    var widths = new[] { qk, qk, values, decayWidth, gateWidth }.Where(w => w > 0).ToArray();
    var operands = widths.Select(w => randn(rows, steps, w, generator: generator)).ToArray();
    var operandsGrad = operands.Select(o => o.clone().requires_grad_(true)).ToArray();
    var both = Measurement.Of("blocks", a.Name, "attention alone, forward + backward (loop and reverse pass)", repeats, () =>
    {
        using var scope = NewDisposeScope();
        alone.Forward(operandsGrad)[0].sum().backward();
        foreach (var o in operandsGrad) { o.grad!.Dispose(); o.grad = null; }
    }).MinMs;
    var forward = Measurement.Of("blocks", a.Name, "attention alone (fused loop)", repeats, () =>
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        alone.Forward(operands);
    }).MinMs;
    foreach (var o in operands.Concat(operandsGrad)) o.Dispose();
    Console.WriteLine(heads == a.Heads ? $"  {label} {both:0.00} ms" : $"  {label} {both:0.00} ms, forward {forward:0.00} ms: {both / forward:0.00}x");
    return (forward, both);
}
if (args.Contains("--peer")) PythonBlocksPeer(report, measured);
else Console.WriteLine("  (--peer also runs the Python peers of RetNet and GLA, benchmarks/peer_blocks.py, where python3 has torch)");
}

// --- a gated linear attention at long T: its recurrent form (ExecutionMode.Auto, O(T) memory) against the masked T x T form
// (ExecutionMode.TorchOps, O(T^2)), time and peak resident-set growth of one forward pass
if (Selected("chunked"))
{
Console.WriteLine("\n== gated linear attention (B 1, 4 heads of k 64, v 64, RetNet's fixed per-head decays): Auto (the fused loop, with gradients one autograd operation with its reverse pass: O(T) memory) against masked T x T (TorchOps)");
Console.WriteLine("   memory: peak resident-set growth of one call (free heap returned with malloc_trim, peak reset through /proc/self/clear_refs)");
const int heads = 4, width = 64;
var gammas = Enumerable.Range(0, heads).Select(h => 1 - Math.Pow(2, -5 - h)).ToArray();
// the attention alone, its queries, keys and values slices of the input (no projections: the attention's own cost)
var retention = Model.Input("x", 3 * heads * width).GatedLinearAttention(heads, width, width,
    query: q => q.Slice(0, heads * width, name: "q"), key: k => k.Slice(heads * width, heads * width, name: "k"),
    value: v => v.Slice(2 * heads * width, heads * width, name: "v"), headDecays: gammas, name: "retention").Build();
var autoModel = retention.Compile();
var maskedModel = retention.Compile(new CompileOptions { Execution = ExecutionMode.TorchOps });
string Mib(long bytes) => bytes < 0 ? "n/a" : $"{bytes / (1 << 20)} MiB";
foreach (var length in quick ? new[] { 2048, 4096 } : new[] { 2048, 4096, 8192 })
{
    // keys scaled by 1/sqrt(d_k), as RetNet's
    using var x = cat([randn(1, length, heads * width, generator: generator), randn(1, length, heads * width, generator: generator) / 8,
        randn(1, length, heads * width, generator: generator)], -1);
    using var xGrad = x.clone().requires_grad_(true);
    var configuration = $"T {length}";
    var longRepeats = length == 4096 ? repeats : Math.Min(repeats, 5);
    var autoForward = report.Add(Measurement.Of("chunked", configuration, "fused recurrent loop (Auto), no gradients", longRepeats, () => Run(autoModel, x)));
    var autoRecorded = report.Add(Measurement.Of("chunked", configuration, "fused loop (Auto), gradients recorded", longRepeats,
        () => { using var scope = NewDisposeScope(); autoModel.forward(xGrad); }));
    var autoBoth = report.Add(Measurement.Of("chunked", configuration, "fused loop and its reverse pass (Auto), forward + backward", longRepeats,
        () => { using var scope = NewDisposeScope(); autoModel.forward(xGrad).sum().backward(); xGrad.grad!.Dispose(); xGrad.grad = null; }));
    var autoMemory = ResidentSet.PeakGrowth(() => Run(autoModel, x));
    var autoBothMemory = ResidentSet.PeakGrowth(() =>
        { using var scope = NewDisposeScope(); autoModel.forward(xGrad).sum().backward(); xGrad.grad!.Dispose(); xGrad.grad = null; });
    Console.WriteLine($"  Auto, {configuration}: peak growth {Mib(autoMemory)} (no gradients: the loop), {Mib(autoBothMemory)} (forward + backward: the loop and its reverse pass)");
    report.Add(new Measurement("chunked", configuration, "Auto, peak memory", 0, 0, $"{Mib(autoMemory)} no gradients (loop), {Mib(autoBothMemory)} forward + backward (loop and reverse pass)"));
    if (length == 8192)
    {
        // the masked form at 8192 is measured for its memory only (one call), or refused by the allocation guard
        try
        {
            var maskedMemory = ResidentSet.PeakGrowth(() => Run(maskedModel, x));
            Console.WriteLine($"  masked, {configuration}: peak growth {Mib(maskedMemory)} (no gradients)");
            report.Add(new Measurement("chunked", configuration, "masked T x T, peak memory", 0, 0, $"{Mib(maskedMemory)} no gradients"));
        }
        catch (GraphException e)
        {
            Console.WriteLine($"  masked, {configuration}: refused ({Refusal(e)})");
            report.Add(new Measurement("chunked", configuration, "masked T x T", 0, 0, "refused by the allocation guard"));
        }
        continue;
    }
    try
    {
        var maskedForward = report.Add(Measurement.Of("chunked", configuration, "masked T x T (TorchOps), no gradients", Math.Min(repeats, 3), () => Run(maskedModel, x)));
        var maskedBoth = report.Add(Measurement.Of("chunked", configuration, "masked T x T (TorchOps), fwd + bwd", Math.Min(repeats, 3),
            () => { using var scope = NewDisposeScope(); maskedModel.forward(xGrad).sum().backward(); xGrad.grad!.Dispose(); xGrad.grad = null; }));
        var maskedMemory = ResidentSet.PeakGrowth(() => Run(maskedModel, x));
        var maskedBothMemory = ResidentSet.PeakGrowth(() =>
            { using var scope = NewDisposeScope(); maskedModel.forward(xGrad).sum().backward(); xGrad.grad!.Dispose(); xGrad.grad = null; });
        Console.WriteLine($"  masked, {configuration}: peak growth {Mib(maskedMemory)} (no gradients), {Mib(maskedBothMemory)} (forward + backward)");
        report.Add(new Measurement("chunked", configuration, "masked T x T, peak memory", 0, 0, $"{Mib(maskedMemory)} no gradients, {Mib(maskedBothMemory)} forward + backward"));
        using (var _ = no_grad())
        using (var scope = NewDisposeScope())
        {
            var (ours, reference) = (autoModel.forward(x), maskedModel.forward(x));
            Console.WriteLine($"  {configuration}: fused loop vs masked, max |difference| / max |y| = {((ours - reference).abs().max() / reference.abs().max()).item<float>():0.0e0}");
        }
        var target = length == 4096;
        void Compare(string what, double value)
        {
            if (target) report.Ratio($"masked / {what} at {configuration}", value, ">= 10", value >= 10);
            else report.Context($"masked / {what} at {configuration}", value);
        }
        Compare("fused loop, no gradients", maskedForward.MinMs / autoForward.MinMs);
        Compare("Auto, forward + backward", maskedBoth.MinMs / autoBoth.MinMs);
        report.Context($"masked / fused loop peak memory at {configuration}, no gradients", (double)maskedMemory / Math.Max(autoMemory, 1));
    }
    catch (GraphException e)
    {
        Console.WriteLine($"  masked, {configuration}: refused ({Refusal(e)})");
        report.Add(new Measurement("chunked", configuration, "masked T x T", 0, 0, "refused by the allocation guard"));
    }
    report.Context($"Auto forward + backward / fused loop forward at {configuration}", autoBoth.MinMs / autoForward.MinMs);
    report.Context($"fused loop with gradients recorded / without at {configuration}", autoRecorded.MinMs / autoForward.MinMs);
}
}

report.Print(Process.GetCurrentProcess().PeakWorkingSet64);
report.WriteCsv(Path.Combine("artifacts", "benchmarks.csv"));
Console.WriteLine($"wrote {Path.GetFullPath(Path.Combine("artifacts", "benchmarks.csv"))}");

static void Run(Duality.Torch.CompiledGraph model, Tensor x)
{
    using var _ = no_grad();
    using var scope = NewDisposeScope();
    model.forward(x);
}

static double StepLatency(Duality.Torch.CompiledGraph model, int features, int steps, out double bytesPerStep)
{
    using var noGrad = no_grad();
    var stream = model.ToStepForm();
    var state = stream.InitialState(1);
    var x = randn(1, features);
    for (int i = 0; i < 20; i++) (_, state) = stream.Step(x, state);
    var before = GC.GetAllocatedBytesForCurrentThread();
    var clock = Stopwatch.StartNew();
    for (int i = 0; i < steps; i++) (_, state) = stream.Step(x, state);
    var elapsed = clock.Elapsed.TotalMilliseconds;
    bytesPerStep = (GC.GetAllocatedBytesForCurrentThread() - before) / (double)steps;
    return elapsed / steps;
}

/// <summary>
/// How a Python peer starts. Debian's OpenBLAS 0.3.21 picks its kernels by CPU model and falls back to its generic
/// (Prescott, SSE3) ones on models it does not know, at a fifth of the machine's rate (here 39-45 GFLOP/s against 205 for
/// the 2048^3 product): on a CPU with AVX-512 and OPENBLAS_CORETYPE unset, the peer is given SkylakeX's kernels.
/// </summary>
static ProcessStartInfo PeerStart(string python, string script)
{
    var start = new ProcessStartInfo(python, [script]) { RedirectStandardOutput = true, RedirectStandardError = true };
    if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported && Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE") is null)
        start.Environment["OPENBLAS_CORETYPE"] = "SkylakeX";
    return start;
}

/// <summary>Runs benchmarks/peer.py (Debian's /usr/bin/python3 first) and adds its figures and ratios to the report.</summary>
static void PythonPeer(Report report, Measurement ours, Measurement oursBackward)
{
    var script = Path.Combine(AppContext.BaseDirectory, "peer.py");
    foreach (var python in new[] { "/usr/bin/python3", "python3" })
    {
        try
        {
            using var process = Process.Start(PeerStart(python, script))!;
            var output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            double Figure(string label) =>
                double.Parse(output.Split('\n').First(l => l.StartsWith(label)).Split(':')[1].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
            if (process.ExitCode != 0 || !output.Contains("python forward:")) continue;
            var (forward, backward, rate) = (Figure("python forward"), Figure("python forward + backward"), output.Split('\n').First(l => l.StartsWith("python matmul")));
            report.Add(new Measurement("gated RNN", "forward", $"Python peer ({python})", forward, forward, ""));
            report.Add(new Measurement("gated RNN", "forward + backward", $"Python peer ({python})", backward, backward, ""));
            report.Add(new Measurement("reference", "matmul 2048^3", "Python peer", 0, 0, rate.Split(',')[1].Trim()));
            report.Ratio("Python peer / compiled, forward", forward / ours.MinMs, "> 1", forward > ours.MinMs);
            report.Ratio("Python peer / compiled, forward + backward", backward / oursBackward.MinMs, "> 1", backward > oursBackward.MinMs);
            return;
        }
        catch (System.ComponentModel.Win32Exception) { }
    }
    Console.WriteLine("  the Python peer did not run: no python3 with torch (Debian: apt-get install python3-torch libopenblas0-pthread)");
}

/// <summary>
/// Runs benchmarks/peer_blocks.py (RetNet and GLA in PyTorch at the blocks section's shapes) and adds its forward and
/// forward + backward times, with the ratios compiled / torch, to the report.
/// </summary>
static void PythonBlocksPeer(Report report, Dictionary<string, (Measurement Forward, Measurement Both)> measured)
{
    var script = Path.Combine(AppContext.BaseDirectory, "peer_blocks.py");
    foreach (var python in new[] { "/usr/bin/python3", "python3" })
    {
        try
        {
            using var process = Process.Start(PeerStart(python, script))!;
            var output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0 || !output.Contains("python RetNet")) continue;
            foreach (var line in output.Split('\n').Where(l => l.Contains("difference"))) Console.WriteLine($"  Python peer: {line}");
            if (output.Split('\n').FirstOrDefault(l => l.StartsWith("python matmul")) is { } rate)
                report.Add(new Measurement("reference", "matmul 2048^3", "Python peer (blocks)", 0, 0, rate.Split(',')[1].Trim()));
            // lines "python <family> <form> forward: 12.3 ms" and "python <family> <form> forward + backward: 45.6 ms"
            foreach (var line in output.Split('\n').Where(l => l.StartsWith("python ") && l.Contains(':')))
            {
                var label = line[..line.IndexOf(':')];
                var ms = double.Parse(line[(line.IndexOf(':') + 1)..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
                var words = label.Split(' ');
                if (words.Length < 4 || !measured.TryGetValue(words[1], out var ours)) continue;
                var backward = label.EndsWith("forward + backward");
                var form = string.Join(' ', words[2..Array.IndexOf(words, "forward")]);
                var against = backward ? ours.Both : ours.Forward;
                report.Add(new Measurement("blocks", words[1], $"Python peer, {form}{(backward ? ", fwd + bwd" : "")}", ms, ms, ""));
                report.Ratio($"{words[1]}: compiled / Python peer ({form}), {(backward ? "forward + backward" : "forward")}", against.MinMs / ms, "< 1", against.MinMs < ms);
            }
            return;
        }
        catch (System.ComponentModel.Win32Exception) { }
    }
    Console.WriteLine("  the Python peers did not run: no python3 with torch (Debian: apt-get install python3-torch libopenblas0-pthread)");
}

static double StreamerLatency(Duality.Streaming.Streamer<float> streamer, int features, int steps, out double bytesPerStep)
{
    var x = new float[features];
    for (int i = 0; i < features; i++) x[i] = (float)Math.Sin(i);
    // long enough for the runtime to finish recompiling the hot methods (it allocates when it does)
    for (var warm = Stopwatch.StartNew(); warm.ElapsedMilliseconds < 1000;) streamer.Step(x);
    var before = GC.GetAllocatedBytesForCurrentThread();
    var clock = Stopwatch.StartNew();
    for (int i = 0; i < steps; i++) streamer.Step(x);
    var elapsed = clock.Elapsed.TotalMilliseconds;
    bytesPerStep = (GC.GetAllocatedBytesForCurrentThread() - before) / (double)steps;
    return elapsed / steps;
}

/// <summary>A refusal on one line: its problems, without the "1 problem in the graph:" heading.</summary>
static string Refusal(GraphException e) => string.Join("; ", e.Message.Split('\n').Skip(1).Select(l => l.Trim()).Where(l => l.Length > 0));

static Duality.Ir.DoubleTensor Values(Tensor t) => Duality.Ir.DoubleTensor.Vector(t.to_type(ScalarType.Float64).data<double>().ToArray());

/// <summary>The gated RNN layer as a user would write it by hand: a loop over time of tensor operations.</summary>
sealed class HandWrittenLayer(Duality.Torch.CompiledGraph model)
{
    private readonly Dictionary<string, Tensor> p = model.named_parameters().ToDictionary(x => x.name, x => (Tensor)x.parameter);

    private Tensor Linear(Tensor x, string name) => nn.functional.linear(x, p[name + ".weight"], p[name + ".bias"]);

    /// <summary>An RNN cell applied step by step: every product inside the loop.</summary>
    public Tensor Cell(Tensor x)
    {
        var h = zeros(x.shape[0], p["memory.lambda"].shape[0]);
        var outputs = new List<Tensor>();
        for (long t = 0; t < x.shape[1]; t++)
        {
            var xt = x.select(1, t);
            h = p["memory.lambda"] * h + Linear(xt, "gate/value/projection") * Linear(xt, "gate/gate/projection").sigmoid();
            outputs.Add(Linear(h, "readout"));
        }
        return stack(outputs, 1);
    }

    /// <summary>The input projections computed for the whole sequence first, then the loop.</summary>
    public Tensor Hoisted(Tensor x)
    {
        var u = Linear(x, "gate/value/projection") * Linear(x, "gate/gate/projection").sigmoid();
        var h = zeros(x.shape[0], u.shape[2]);
        var outputs = new List<Tensor>();
        for (long t = 0; t < x.shape[1]; t++)
        {
            h = p["memory.lambda"] * h + u.select(1, t);
            outputs.Add(Linear(h, "readout"));
        }
        return stack(outputs, 1);
    }
}

/// <summary>
/// The recurrent block families as the papers' pseudocode reads, one step at a time with every product inside the loop,
/// over the compiled model's own parameters (so both compute the same function).
/// </summary>
sealed class HandWrittenBlocks(Duality.Torch.CompiledGraph model)
{
    private readonly Dictionary<string, Tensor> p = model.named_parameters().ToDictionary(x => x.name, x => (Tensor)x.parameter);

    private Tensor Linear(Tensor x, string name) =>
        nn.functional.linear(x, p[name + ".weight"], p.TryGetValue(name + ".bias", out var b) ? b : null);

    /// <summary>The loop for a family, or null when none is written.</summary>
    public Func<Tensor, Tensor>? For(string family) => family switch
    {
        "minGRU" => MinGru,
        "minLSTM" => MinLstm,
        "RG-LRU" => RgLru,
        "LRU" => Lru,
        "GLA" => Gla,
        "RetNet" => RetNet,
        "Mamba-2" => Mamba2,
        "mLSTM" => Mlstm,
        _ => null,
    };

    private static Tensor Steps(Tensor x, Tensor h, Func<Tensor, Tensor, (Tensor H, Tensor Y)> step)
    {
        var outputs = new List<Tensor>();
        for (long t = 0; t < x.shape[1]; t++)
        {
            (h, var y) = step(x.select(1, t), h);
            outputs.Add(y);
        }
        return stack(outputs, 1);
    }

    /// <summary>z = sigmoid(W_z x + b), h = (1 - z) h + z (W_h x + b).</summary>
    private Tensor MinGru(Tensor x) => Steps(x, zeros(x.shape[0], p["mingru/update/gate/z.weight"].shape[0]), (xt, h) =>
    {
        var z = Linear(xt, "mingru/update/gate/z").sigmoid();
        var next = (1 - z) * h + z * Linear(xt, "mingru/update/value/candidate");
        return (next, next);
    });

    /// <summary>f, i = sigmoid(W x + b), h = f / (f + i) h + i / (f + i) (W_h x + b).</summary>
    private Tensor MinLstm(Tensor x) => Steps(x, zeros(x.shape[0], p["minlstm/forget.weight"].shape[0]), (xt, h) =>
    {
        var (f, i) = (Linear(xt, "minlstm/forget").sigmoid(), Linear(xt, "minlstm/input").sigmoid());
        var next = f / (f + i) * h + i / (f + i) * Linear(xt, "minlstm/update/value/candidate");
        return (next, next);
    });

    /// <summary>r, i = sigmoid(W x + b), a = e^(w r), h = a h + sqrt(1 - a^2) (i x).</summary>
    private Tensor RgLru(Tensor x) => Steps(x, zeros(x.shape[0], x.shape[2]), (xt, h) =>
    {
        var a = (p["rglru/log_a.factors"] * Linear(xt, "rglru/recurrence_gate").sigmoid()).exp();
        var next = a * h + (1 - a * a).sqrt() * (Linear(xt, "rglru/gated/gate/input_gate").sigmoid() * xt);
        return (next, next);
    });

    /// <summary>h = lambda h + sqrt(1 - |lambda|^2) B x (complex), y = Re(C h) + D x.</summary>
    private Tensor Lru(Tensor x)
    {
        var lambda = p["lru/h.lambda"];
        var (re, im) = (lambda.select(1, 0), lambda.select(1, 1));
        var gain = (1 - re * re - im * im).sqrt();
        var n = lambda.shape[0];
        return Steps(x, zeros(x.shape[0], 2 * n), (xt, h) =>
        {
            var u = Linear(xt, "lru/B");
            var (hre, him) = (h.narrow(1, 0, n), h.narrow(1, n, n));
            var next = cat([re * hre - im * him + gain * u.narrow(1, 0, n), re * him + im * hre + gain * u.narrow(1, n, n)], 1);
            return (next, Linear(next, "lru/C") + p["lru/skip/D.factors"] * xt);
        });
    }

    private const int Heads = 4;

    /// <summary>x [batch, width] normalised per head ([batch, heads, width / heads]), eps 1e-5, then gain and bias when given.</summary>
    private static Tensor GroupNorm(Tensor x, Tensor? gain, Tensor? bias)
    {
        var g = x.view(x.shape[0], Heads, -1);
        var centred = g - g.mean([-1], keepdim: true);
        var y = (centred / (centred.square().mean([-1], keepdim: true) + 1e-5).sqrt()).view(x.shape[0], -1);
        return gain is null ? y : y * gain + bias!;
    }

    /// <summary>One step of the attention per head: S = diag(lambda) S + i k v^T, o = S^T q (S [batch, heads, key, value]).</summary>
    private static (Tensor S, Tensor O) Attend(Tensor s, Tensor lambda, Tensor? entry, Tensor q, Tensor k, Tensor v)
    {
        var written = k.unsqueeze(-1) * v.unsqueeze(-2);
        s = lambda * s + (entry is null ? written : entry * written);
        return (s, q.unsqueeze(-2).matmul(s).squeeze(-2));
    }

    /// <summary>
    /// q, k, v = W x (heads of 64), alpha = sigmoid(W_2 W_1 x + b)^(1/16) per key channel, S = diag(alpha) S + k v^T,
    /// o = S^T q, y = W_O (SiLU(W_r x + b) * GN(o)).
    /// </summary>
    private Tensor Gla(Tensor x)
    {
        const string a = "gla/output_gate/value/attention";
        var batch = x.shape[0];
        Tensor Split(Tensor t) => t.view(batch, Heads, -1);
        var s = zeros(batch, Heads, 64, 64);
        return Steps(x, s, (xt, state) =>
        {
            var (q, k, v) = (Split(Linear(xt, a + "/query/q")), Split(Linear(xt, a + "/key/k")), Split(Linear(xt, a + "/value/v")));
            var alpha = (nn.functional.logsigmoid(Linear(Linear(xt, a + "/decay/down"), a + "/decay/up")) / 16).exp();
            var (next, o) = Attend(state, Split(alpha).unsqueeze(-1), null, q, k, v);
            var normed = GroupNorm(o.reshape(batch, -1), p["gla/output_gate/value/norm.gain"], p["gla/output_gate/value/norm.bias"]);
            return (next, Linear(normed * nn.functional.silu(Linear(xt, "gla/output_gate/gate/r")), "gla/out"));
        });
    }

    /// <summary>
    /// q, k / sqrt(d_k) rotated by t theta_j per pair of channels, S = gamma_h S + k v^T, o = S^T q,
    /// y = W_O (SiLU(W_G x) * GN(o)) (no gains), gamma_h = 1 - 2^(-5-h).
    /// </summary>
    private Tensor RetNet(Tensor x)
    {
        const string a = "retnet/output_gate/value/retention";
        var batch = x.shape[0];
        Tensor Split(Tensor t) => t.view(batch, Heads, -1);
        var theta = tensor(Enumerable.Range(0, 32).Select(j => (float)Math.Pow(10000, -j / 31.0)).ToArray());
        var gamma = tensor(Enumerable.Range(0, Heads).Select(h => (float)(1 - Math.Pow(2, -5 - h))).ToArray()).view(1, Heads, 1, 1);
        var s = zeros(batch, Heads, 64, 64);
        long t = 0;
        return Steps(x, s, (xt, state) =>
        {
            var (cos, sin) = ((theta * t).cos(), (theta * t).sin());
            t++;
            Tensor Rotate(Tensor u)
            {
                var pairs = u.view(batch, Heads, 32, 2);
                var (even, odd) = (pairs.select(-1, 0), pairs.select(-1, 1));
                return stack([even * cos - odd * sin, even * sin + odd * cos], -1).view(batch, Heads, 64);
            }
            var q = Rotate(Linear(xt, a + "/query/q"));
            var k = Rotate(Linear(xt, a + "/key/k") / 8);
            var (next, o) = Attend(state, gamma, null, q, k, Split(Linear(xt, a + "/value/v")));
            return (next, Linear(GroupNorm(o.reshape(batch, -1), null, null) * nn.functional.silu(Linear(xt, "retnet/output_gate/gate/g")), "retnet/out"));
        });
    }

    /// <summary>
    /// [x; B; C] = SiLU(conv(W_xBC u)) (4 taps kept as a window), dt = softplus(W_dt u + b), per head of 64
    /// S = e^(dt A) S + dt B x^T, o = S^T C + D x, y = W_out RMSNorm(o * SiLU(W_z u)).
    /// </summary>
    private Tensor Mamba2(Tensor x)
    {
        var batch = x.shape[0];
        var (weight, bias) = (p["mamba2/conv.weight"], p["mamba2/conv.bias"]);
        var window = new List<Tensor> { zeros(batch, 640), zeros(batch, 640), zeros(batch, 640) };
        var (a, skip, gain) = (p["mamba2/ssd/decay/A.factors"], p["mamba2/skip/D.factors"], p["mamba2/norm.gain"]);
        return Steps(x, zeros(batch, 8, 64, 64), (ut, state) =>
        {
            window.Add(Linear(ut, "mamba2/in_xbc"));
            if (window.Count > 4) window.RemoveAt(0);
            // tap j reads the input j steps back
            var conv = bias + weight.select(1, 0) * window[3] + weight.select(1, 1) * window[2] + weight.select(1, 2) * window[1] + weight.select(1, 3) * window[0];
            var xbc = nn.functional.silu(conv);
            var (xs, b, c) = (xbc.narrow(1, 0, 512), xbc.narrow(1, 512, 64), xbc.narrow(1, 576, 64));
            var dt = nn.functional.softplus(Linear(ut, "mamba2/dt"));
            var lambda = (dt * a).exp().view(batch, 8, 1, 1);
            var heads = xs.view(batch, 8, 64);
            var (next, o) = Attend(state, lambda, dt.view(batch, 8, 1, 1), c.unsqueeze(1).expand(batch, 8, 64), b.unsqueeze(1).expand(batch, 8, 64), heads);
            var gated = (o.reshape(batch, 512) + skip * xs) * nn.functional.silu(Linear(ut, "mamba2/gate/gate/z"));
            var normed = gated / (gated.square().mean([-1], keepdim: true) + 1e-5).sqrt() * gain;
            return (next, Linear(normed, "mamba2/out"));
        });
    }

    /// <summary>
    /// q, k / sqrt(d_k), v = W x, f = sigmoid(w_f x + b), i = e^(w_i x + b) per head, C = f C + i k v^T, n = f n + i k,
    /// h = (C^T q) / max(|n . q|, 1), y = W_out GN(h * sigmoid(W_o x + b)).
    /// </summary>
    private Tensor Mlstm(Tensor x)
    {
        const string a = "mlstm/output_gate/value/cell";
        var batch = x.shape[0];
        Tensor Split(Tensor t) => t.view(batch, Heads, -1);
        // the normaliser n kept as a 65th value column, as the state of one product per step
        return Steps(x, zeros(batch, Heads, 64, 65), (xt, state) =>
        {
            var (q, k, v) = (Split(Linear(xt, a + "/query/q")), Split(Linear(xt, a + "/key/k") / 8), Split(Linear(xt, a + "/value/v")));
            var f = Linear(xt, a + "/decay/forget").sigmoid().view(batch, Heads, 1, 1);
            var i = Linear(xt, a + "/gate/input").exp().view(batch, Heads, 1, 1);
            var (next, o) = Attend(state, f, i, q, k, cat([v, ones(batch, Heads, 1)], -1));
            var h = (o.narrow(-1, 0, 64) / o.narrow(-1, 64, 1).abs().clamp_min(1)).reshape(batch, -1) * Linear(xt, "mlstm/output_gate/gate/o").sigmoid();
            return (next, Linear(GroupNorm(h, p["mlstm/norm.gain"], p["mlstm/norm.bias"]), "mlstm/out"));
        });
    }
}


/// <summary>Peak resident-set growth of one call on Linux: free heap returned first, the peak reset, -1 elsewhere.</summary>
static class ResidentSet
{
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    public static long PeakGrowth(Action run)
    {
        if (!OperatingSystem.IsLinux()) { run(); return -1; }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        try { MallocTrim(0); } catch (EntryPointNotFoundException) { }
        var before = Read("VmRSS:");
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (IOException) { run(); return -1; }
        catch (UnauthorizedAccessException) { run(); return -1; }
        run();
        return Read("VmHWM:") - before;
    }

    private static long Read(string field) =>
        1024 * long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith(field))[field.Length..].Trim().Split(' ')[0]);
}
