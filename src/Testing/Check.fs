/// Properties users state about their own architectures, checked by FsCheck on random weights
/// and random inputs, with failing cases shrunk to the shortest, smallest-batch sequence:
///
///   Laws.check (Laws.preserves 1e-10 Graph.lower myGraph)          // a rewrite keeps the function
///   Laws.check (Laws.sameFunction 1e-10 (fun seed -> a seed, b seed))  // two architectures agree
///   Laws.check (Laws.stepEqualsFull 1e-10 myGraph)                  // streaming = full sequence
module Duality.Testing.Laws

open System
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Passes
open Duality.Testing.Sequences

/// Where a law is checked: the seed of the weights, the seed, batch, length and scale of the inputs.
type Sample =
    { WeightSeed: int; InputSeed: int; Batch: int; Time: int; InputScale: float }

let private sample maxTime =
    gen {
        let! weights = Gen.choose (0, 1_000_000)
        let! inputs = Gen.choose (0, 1_000_000)
        let! batch = Gen.choose (1, 4)
        let! time = Gen.sized (fun size -> Gen.choose (1, max 1 (min maxTime (size + 1))))
        let! scale = Gen.elements [ 0.1; 1.0; 3.0 ]
        return { WeightSeed = weights; InputSeed = inputs; Batch = batch; Time = time; InputScale = scale }
    }

/// Shorter sequences, smaller batches and unit scale first.
let private shrink (s: Sample) =
    seq {
        if s.Time > 1 then
            yield { s with Time = 1 }
            yield { s with Time = s.Time / 2 }
            yield { s with Time = s.Time - 1 }
        if s.Batch > 1 then yield { s with Batch = 1 }
        if s.InputScale <> 1.0 then yield { s with InputScale = 1.0 }
    }

/// Samples with sequences of 1 to 64 steps, shrinking as described.
let samples = Arb.fromGenShrink (sample 64, shrink)

/// The graph's inputs for a sample, in its input order.
let inputsFor (g: Graph) (s: Sample) : Sequence[] =
    let random = Random(s.InputSeed)
    g.InputNodes |> Seq.map (fun i -> randomSequence random s.Batch s.Time i.Features s.InputScale) |> Array.ofSeq

/// The graph's outputs in float64 for the given inputs.
let outputsOf (g: Graph) (inputs: Sequence[]) =
    use _ = torch.no_grad()
    g.Compile(CompileOptions.Float64).Forward(inputs |> Array.map (toTensor torch.ScalarType.Float64)) |> Array.map ofTensor

let private agree tolerance what (expected: Sequence[]) (actual: Sequence[]) =
    if expected.Length <> actual.Length then failwithf "%s: %d outputs against %d" what expected.Length actual.Length
    let errors = Array.map2 relativeError expected actual
    let worst = Array.max errors
    if worst <= tolerance then true
    else failwithf "%s: relative error %.3e exceeds %.1e (per output: %s)" what worst tolerance
            (errors |> Array.map (sprintf "%.2e") |> String.concat ", ")

/// For random weights and inputs, `make weightSeed` returns two graphs that compute the same function
/// (relative error max|a - b| / max|a| within `tolerance`, float64).
let sameFunction tolerance (make: int -> Graph * Graph) : Property =
    Prop.forAll samples (fun s ->
        let a, b = make s.WeightSeed
        let inputs = inputsFor a s
        agree tolerance "outputs differ" (outputsOf a inputs) (outputsOf b inputs))

/// `transform` keeps the function of `graph`, whatever its (seeded, random) weights.
let preserves tolerance (transform: Graph -> Graph) (graph: Graph) : Property =
    sameFunction tolerance (fun seed ->
        let weighted = InitializeWeights.Run(graph, seed, WeightInit.Perturbed)
        weighted, transform weighted)

/// The graph's step form (one time step at a time) computes its full-sequence form.
let stepEqualsFull tolerance (graph: Graph) : Property =
    Prop.forAll samples (fun s ->
        let weighted = InitializeWeights.Run(graph, s.WeightSeed, WeightInit.Perturbed)
        let inputs = inputsFor weighted s
        let full = outputsOf weighted inputs
        use _ = torch.no_grad()
        let tensors = inputs |> Array.map (toTensor torch.ScalarType.Float64)
        let streamed = weighted.Compile(CompileOptions.Float64).ToStepForm().Unroll(tensors) |> Array.map ofTensor
        agree tolerance "step form differs from the full sequence" full streamed)

/// Checks a law with FsCheck (100 samples); on failure throws with the smallest failing sample.
let check (law: Property) = Check.One(Config.QuickThrowOnFailure, law)

/// Checks a law with FsCheck on `count` samples.
let checkWith count (law: Property) = Check.One(Config.QuickThrowOnFailure.WithMaxTest(count), law)
