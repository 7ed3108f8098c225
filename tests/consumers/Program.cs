// A program outside the repository using the packages: a linear transformer layer built with the C# builders,
// lowered to the gated RNN that computes it, checked for equivalence, compiled and run. Exits 1 on failure.
using Duality;
using Duality.Builders;
using Duality.Ir;
using Duality.Passes;
using Duality.Runtime;
using Duality.Verification;
using TorchSharp;

var transformer = InitializeWeights.Run(
    Model.Input("x", 6)
        .Projection(8, name: "embed")
        .Residual(name: "layer", body: b => b.RmsNorm().Attention(heads: 2, keyWidth: 3, valueWidth: 3, outFeatures: 8, decay: 0.9))
        .Projection(2, name: "readout")
        .Build(),
    seed: 7);

var lowering = LowerAttention.Run(transformer);
foreach (var r in lowering.Lowered)
    Console.WriteLine($"{r.Node}: {r.Construction}, {r.RecurrentNeurons} recurrent neurons, {r.Parameters} parameters");
var report = Equivalence.Check(transformer, lowering.Graph);
Console.WriteLine(report);

var model = lowering.Graph.Compile(new CompileOptions { Seed = 7 });
var y = model.forward(torch.randn(2, 16, 6));
Console.WriteLine($"compiled gated RNN: output [{string.Join(", ", y.shape)}]");
Console.WriteLine($"native library: {NativeSetup.Ensure() ?? "loaded as built (nothing to fix at run time)"}");

var ok = report.Equivalent && lowering.Refused.Count == 0 && !lowering.Graph.Nodes.OfType<Attention>().Any()
    && y.shape.SequenceEqual([2L, 16L, 2L]);
Console.WriteLine(ok ? "C# consumer: ok" : "C# consumer: FAILED");
return ok ? 0 : 1;
