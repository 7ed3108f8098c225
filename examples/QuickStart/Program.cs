// Builds a small gated-RNN sequence model, prints its structure and runs it on random input.
using Duality;
using Duality.Builders;
using Duality.Ir;
using TorchSharp;
using static TorchSharp.torch;

const int features = 8, width = 32;

// Two residual blocks: a gated linear recurrence (an input gate, a diagonal recurrence, an output
// gate) and a gated MLP; then a readout.
var graph = Model.Input("x", features)
    .Projection(width, name: "embed")
    .Residual(name: "block1", body: b => b
        .RmsNorm()
        .Gate(value: v => v.Projection(width).LinearRecurrence(name: "memory"),
              gate: g => g.Projection(width), activation: ActivationKind.SiLU)
        .Projection(width, name: "out"))
    .Residual(name: "block2", body: b => b
        .RmsNorm()
        .Gate(value: v => v.Projection(2 * width), gate: g => g.Projection(2 * width), activation: ActivationKind.GELU)
        .Projection(width, name: "out"))
    .Projection(4, name: "readout")
    .Build();

Console.WriteLine(graph.Summary());
Console.WriteLine();

var model = graph.Compile(new CompileOptions { Seed = 7 });
Console.WriteLine($"compiled: {model.ParameterCount:N0} parameters, named by node path:");
foreach (var (name, parameter) in model.named_parameters().Take(6))
    Console.WriteLine($"  {name,-36} [{string.Join(", ", parameter.shape)}]");
Console.WriteLine("  ...");

torch.manual_seed(7);
var x = torch.randn(2, 16, features);
using (torch.no_grad())
{
    var y = model.forward(x);
    Console.WriteLine($"input  [{string.Join(", ", x.shape)}] -> output [{string.Join(", ", y.shape)}]");

    var stream = model.ToStepForm();
    var state = stream.InitialState(batch: 2);
    Tensor last = y;
    for (int t = 0; t < 16; t++) (last, state) = stream.Step(x[.., t], state);
    var gap = (last - y[.., -1]).abs().max().item<float>();
    Console.WriteLine($"streamed 16 steps one at a time: last output differs from the full sequence by {gap:E1}");

    // the allocation-free streamer: spans in, spans out, state kept in its own buffers
    var streamer = model.ToStreamer<float>(batch: 2);
    var tokens = x.transpose(0, 1).contiguous().data<float>().ToArray();    // [time, batch, features]
    float[] lastToken = [];
    for (int t = 0; t < 16; t++) lastToken = streamer.Step(tokens.AsSpan(t * 2 * features, 2 * features)).ToArray();
    var expected = y[.., -1].contiguous().data<float>().ToArray();
    var streamerGap = lastToken.Zip(expected, (a, b) => Math.Abs(a - b)).Max();
    Console.WriteLine($"Streamer, 16 tokens: last output differs from the full sequence by {streamerGap:E1}");
}
