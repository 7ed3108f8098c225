/// Laws of the streamer: one token at a time over preallocated buffers equals the full-sequence
/// form, allocates nothing once warm, and runs lowered attention structure-aware.
module Duality.Properties.LawsStreaming

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Reference
open Duality.Streaming
open Duality.Properties.Support
open Duality.Testing.Sequences
open Duality.Testing.Generators

let config = { FsCheckConfig.defaultConfig with maxTest = 150; endSize = 64 }

let private outputsLike (g: Graph) batch time =
    g.Outputs |> Seq.map (fun o -> Array3D.zeroCreate<double> batch time g.Widths.[o.Index]) |> Array.ofSeq

/// Feeds [batch, time, features] inputs one step at a time; returns the outputs as sequences.
let stream (s: Streamer<'T>) (ofDouble: double -> 'T) (toDouble: 'T -> double) (g: Graph) (inputs: double[,,][]) =
    let batch, time = inputs.[0].GetLength 0, inputs.[0].GetLength 1
    let outputs = outputsLike g batch time
    for t in 0 .. time - 1 do
        for i in 0 .. inputs.Length - 1 do
            let width = inputs.[i].GetLength 2
            let buffer = s.Input(i)
            for b in 0 .. batch - 1 do
                for f in 0 .. width - 1 do buffer.[b * width + f] <- ofDouble inputs.[i].[b, t, f]
        s.Step()
        for o in 0 .. outputs.Length - 1 do
            let width = outputs.[o].GetLength 2
            let y = s.Output(o)
            for b in 0 .. batch - 1 do
                for f in 0 .. width - 1 do outputs.[o].[b, t, f] <- toDouble y.[b * width + f]
    outputs

let stream64 (s: Streamer<float>) = stream s id id

let stream32 (s: Streamer<float32>) = stream s float32 float

let private agree tolerance label (expected: double[,,][]) (actual: double[,,][]) =
    Array.forall2 (fun e a -> within tolerance (scaledError e a) label) expected actual

/// Managed bytes allocated by the current thread over <paramref name="steps"/> steps of a warm streamer: the
/// fewest over three windows, since the runtime itself allocates once when it recompiles hot methods.
let bytesPerSteps (s: Streamer<'T>) steps =
    s.Step()
    s.Step()
    let window () =
        let before = GC.GetAllocatedBytesForCurrentThread()
        let mutable i = 0
        while i < steps do
            s.Step()
            i <- i + 1
        GC.GetAllocatedBytesForCurrentThread() - before
    List.min [ window (); window (); window () ]

let private lowered (l: AttentionLayer) = LowerAttention.ToGatedRnn(attentionGraph l, Construction.Full)

let private layerInputs (l: AttentionLayer) = [| randomSequence (Random l.Seed) l.Batch l.Time l.Width 1.0 |]

let tests =
    testList "streaming" [
        testPropertyWithConfig config "streamer = reference evaluator (float64, scaled error <= 1e-10)" <|
            Prop.forAll arbCase (fun c ->
                let g = c.Graph
                // capacity 1: a softmax attention's cache grows on the way
                causal g ==> lazy (agree 1e-10 "streamer vs reference" (ReferenceEvaluator.Evaluate(g, c.Inputs))
                                                                     (stream64 (Streamer.Create<float>(g, c.Batch, 1)) g c.Inputs)))

        testPropertyWithConfig config "streamer = reference evaluator (float32, scaled error <= 2e-4)" <|
            Prop.forAll arbCase (fun c ->
                let g = c.Graph
                causal g ==> lazy (agree 2e-4 "streamer vs reference" (ReferenceEvaluator.Evaluate(g, c.Inputs))
                                                                    (stream32 (Streamer.Create<float32>(g, c.Batch)) g c.Inputs)))

        testPropertyWithConfig config "a warm streamer allocates no managed memory per step" <|
            Prop.forAll arbCase (fun c ->
                causal c.Graph ==> lazy (
                    let s = Streamer.Create<float32>(c.Graph, c.Batch, 64)
                    let bytes = bytesPerSteps s 20
                    bytes = 0L || failwithf "%d bytes allocated over 20 steps" bytes))

        testPropertyWithConfig config "Reset: a streamer replays the same outputs" <|
            Prop.forAll arbCase (fun c ->
                let g = c.Graph
                causal g ==> lazy (
                    let s = Streamer.Create<float>(g, c.Batch, 1)
                    let first = stream64 s g c.Inputs
                    s.Reset()
                    s.Steps = 0L && agree 0.0 "after Reset" first (stream64 s g c.Inputs)))

        testPropertyWithConfig LawsLowering.config "lowered attention (both constructions, every decay) streams structure-aware; every lowering equals the attention (float64, < 1e-10)" <|
            Prop.forAll arbLayer (fun l ->
                let g, rnn = attentionGraph l, lowered l
                let s = Streamer.Create<float>(rnn, l.Batch)
                let inputs = layerInputs l
                let expected = stream64 (Streamer.Create<float>(g, l.Batch)) g inputs
                let smallest = LowerAttention.ToGatedRnn(g, Construction.Smallest)
                let smallestStreamer = Streamer.Create<float>(smallest, l.Batch)
                if s.StructuredLayers <> 1 then failwith "the full construction streams node by node"
                if smallestStreamer.StructuredLayers <> 1 then failwith "the smallest construction streams node by node"
                within 1e-10 (relativeError expected.[0] (stream64 s rnn inputs).[0]) "lowered vs attention"
                && within 1e-10 (relativeError expected.[0] (stream64 smallestStreamer smallest inputs).[0]) "smallest vs attention"
                && within 1e-10 (relativeError (ReferenceEvaluator.Evaluate(g, inputs)).[0] expected.[0]) "attention vs reference")

        testPropertyWithConfig LawsLowering.config "a warm streamer of a lowered attention allocates nothing (float32)" <|
            Prop.forAll arbLayer (fun l ->
                let s = Streamer.Create<float32>(lowered l, l.Batch)
                bytesPerSteps s 20 = 0L)

        test "a streamer refuses a wrong input length, a graph without weights, and non-causal attention" {
            let g = InitializeWeights.Run(Model.Input("x", 3).Projection(2, name = "proj").Build(), 1)
            let s = Streamer.Create<float>(g, 2)
            let message =
                try
                    let _ = s.Step(ReadOnlySpan(Array.zeroCreate<float> 5))
                    ""
                with :? ArgumentException as e -> e.Message
            Expect.stringContains message "input 'x' takes [batch 2, features 3] = 6 values per step, got 5" "names the input and the sizes"
            let unweighted = Model.Input("x", 3).Projection(2, name = "proj").Build()
            Expect.throwsT<GraphException> (fun () -> Streamer.Create<float>(unweighted) |> ignore) "no weights"
            let acausal = InitializeWeights.Run(Model.Input("x", 4).Attention(1, 2, 2, causal = false, name = "att").Build(), 1)
            Expect.throwsT<GraphException> (fun () -> Streamer.Create<float>(acausal) |> ignore) "non-causal"
        }
    ]
