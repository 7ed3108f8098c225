/// Laws of the rotary position embedding (`Rotary`): every form computes the same rotation, the state carries the
/// position, rotated queries and keys meet through t - s alone, pairs keep their norm, and the gradient is the
/// transposed rotation.
module Duality.Properties.LawsRotary

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Builders
open Duality.Ir
open Duality.Persistence
open Duality.Reference
open Duality.Properties.Support
open Duality.Testing.Sequences

let private f64 = torch.ScalarType.Float64
/// float64: the same products, cosines from another library.
let private tolerance64 = 1e-12
/// float32 against the float64 reference: a few float32 roundings of values below 1.5.
let private tolerance32 = 1e-5

let private config = { FsCheckConfig.defaultConfig with maxTest = 30 }

/// Sizes and data of one draw: heads, head width d (even), the angles given or not, batch, time, seed. The fused pass
/// (CPU, float32 and float64) takes a head's pairs a vector at a time and the rest one by one: head widths 2 to 8, 16,
/// 18 and 34 reach whole vectors and a remainder in both precisions at 128 to 512 bits; 600 to 700 steps pass the
/// parallel threshold (2^16 elements) where the other draws stay below it.
type private Draw =
    { Heads: int; HeadWidth: int; Angles: double[] option; Batch: int; Time: int; Seed: int }
    member w.Width = w.Heads * w.HeadWidth

let private draws =
    gen {
        let! heads = Gen.choose (1, 3)
        let! pairs = Gen.elements [ 1; 2; 3; 4; 8; 9; 17 ]
        let! angles = Gen.oneof [ Gen.constant None; Gen.map Some (Gen.arrayOfLength pairs (Gen.map (fun i -> float i / 10.0) (Gen.choose (-31, 31)))) ]
        let! batch = Gen.choose (1, 3)
        let! time = Gen.frequency [ 1, Gen.constant 1; 3, Gen.choose (2, 20); 1, Gen.choose (60, 100); 1, Gen.choose (600, 700) ]
        let! seed = Gen.choose (0, 10000)
        return { Heads = heads; HeadWidth = 2 * pairs; Angles = angles; Batch = batch; Time = time; Seed = seed }
    }
    |> Arb.fromGen

let private graphOf (w: Draw) =
    Model.Input("x", w.Width).Rotary(w.Heads, Option.toObj w.Angles, name = "rotary").Build()

let private rotaryOf (g: Graph) = g.Nodes |> Seq.pick (function :? Rotary as r -> Some r | _ -> None)

let private inputOf (w: Draw) seed = randomSequence (Random(seed)) w.Batch w.Time w.Width 1.0

let private reference (g: Graph) (x: Sequence) = (ReferenceEvaluator.Evaluate(g, [| x |])).[0]

let private compiled (g: Graph) mode (x: Sequence) =
    noGrad (fun () -> ofTensor (g.Compile(CompileOptions(DType = f64, Execution = mode)).Forward([| toTensor f64 x |]).[0]))

/// Steps first .. last - 1 of x.
let private steps (x: Sequence) first last =
    Array3D.init (x.GetLength 0) (last - first) (x.GetLength 2) (fun b t f -> x.[b, first + t, f])

/// a then b along time.
let private joined (a: Sequence) (b: Sequence) =
    let ta = a.GetLength 1
    Array3D.init (a.GetLength 0) (ta + b.GetLength 1) (a.GetLength 2) (fun i t f -> if t < ta then a.[i, t, f] else b.[i, t - ta, f])

let private modes = [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ]

/// The same rotary node turning the other way: theta_j -> -theta_j, i.e. the transposed rotation at every step.
let private reversed (g: Graph) =
    let r = rotaryOf g
    let angles = DoubleTensor.Vector(Array.init (r.HeadWidth / 2) (fun j -> -r.Theta j))
    Model.Input("x", r.Width).Rotary(r.Heads, Array.ofSeq angles.Data, name = "rotary").Build()

/// A GraphException from `build`, whose message names the node and every one of `words`.
let private refusedNaming (words: string list) (build: unit -> Graph) =
    match (try Ok(build ()) with e -> Error e) with
    | Ok _ -> failtest "the ill-formed rotary embedding was built"
    | Error(:? GraphException as e) ->
        for word in "rotary" :: words do Expect.stringContains e.Message word (sprintf "the message names %s" word)
    | Error e -> failtestf "expected a GraphException, got %O" e

let tests =
    testList "rotary" [
        testCase "rotary by hand: theta = pi/2 turns (1, 0) to (0, 1) at t = 1 and to (-1, 0) at t = 2; default theta_j = 10000^(-2j/d)" <| fun () ->
            let g = Model.Input("x", 2).Rotary(1, [| Math.PI / 2.0 |]).Build()
            let x = Array3D.init 1 3 2 (fun _ _ f -> if f = 0 then 1.0 else 0.0)
            let expected = array2D [ [ 1.0; 0.0 ]; [ 0.0; 1.0 ]; [ -1.0; 0.0 ] ]
            for what, y in [ "reference", reference g x; "compiled", compiled g ExecutionMode.TorchOps x ] do
                for t in 0 .. 2 do
                    for f in 0 .. 1 do
                        Expect.isLessThanOrEqual (abs (y.[0, t, f] - expected.[t, f])) 1e-15 (sprintf "%s, t = %d, feature %d" what t f)
            let defaults = rotaryOf (Model.Input("x", 8).Rotary(2).Build())
            Expect.equal (defaults.HeadWidth, defaults.Theta 0) (4, 1.0) "d = 4, theta_0 = 1"
            Expect.floatClose Accuracy.veryHigh (defaults.Theta 1) 0.01 "theta_1 = 10000^(-1/2)"
            Expect.equal (ParameterCounts.Total (Model.Input("x", 8).Rotary(2).Build())) 0L "no trainable weights"

        testPropertyWithConfig config "reference = compiled, Auto, PerNode and TorchOps (float64, scaled error <= 1e-12)" <|
            Prop.forAll draws (fun w ->
                let g = graphOf w
                let x = inputOf w w.Seed
                let expected = reference g x
                modes |> List.forall (fun mode -> within tolerance64 (scaledError expected (compiled g mode x)) (sprintf "%A" mode)))

        testPropertyWithConfig config "float32 = reference (scaled error <= 1e-5), compiled and streamed" <|
            Prop.forAll draws (fun w ->
                let g = graphOf w
                let x = inputOf w w.Seed
                let expected = reference g x
                let compiled32 = noGrad (fun () -> ofTensor (g.Compile(CompileOptions()).Forward([| toTensor torch.ScalarType.Float32 x |]).[0]))
                let streamed = (LawsStreaming.stream32 (Streaming.Streamer.Create<float32>(g, w.Batch)) g [| x |]).[0]
                within tolerance32 (scaledError expected compiled32) "compiled" && within tolerance32 (scaledError expected streamed) "streamed")

        testPropertyWithConfig config "step form and streamer = full sequence, the position carried across calls and reset (float64, 1e-12)" <|
            Prop.forAll draws (fun w ->
                let g = graphOf w
                let x = inputOf w w.Seed
                let expected = compiled g ExecutionMode.TorchOps x
                let split = w.Time / 2
                let stepForm = g.Compile(CompileOptions.Float64).ToStepForm()
                // one call per step, the state of each passed to the next
                let stepped =
                    noGrad (fun () ->
                        let mutable state = stepForm.InitialState(int64 w.Batch)
                        let ys =
                            [| for t in 0 .. w.Time - 1 do
                                   let struct (y, next) = stepForm.Step((toTensor f64 (steps x t (t + 1))).select(1, 0L), state)
                                   state <- next
                                   yield ofTensor (y.unsqueeze(1L)) |]
                        Expect.equal state.Steps (int64 w.Time) "the state counts the steps"
                        Array.reduce joined ys)
                let unrolledTwice = noGrad (fun () -> [ for _ in 1 .. 2 -> ofTensor (stepForm.Unroll(toTensor f64 x)) ])
                // the streamer continues where the first call stopped, then starts over after Reset
                let streamer = Streaming.Streamer.Create<float>(g, w.Batch)
                let first = (LawsStreaming.stream64 streamer g [| steps x 0 split |]).[0]
                let rest = (LawsStreaming.stream64 streamer g [| steps x split w.Time |]).[0]
                streamer.Reset()
                let again = (LawsStreaming.stream64 streamer g [| x |]).[0]
                within tolerance64 (scaledError expected stepped) "step form, one call per step"
                && unrolledTwice |> List.forall (fun y -> within tolerance64 (scaledError expected y) "step form, unrolled (from position 0 each time)")
                && within tolerance64 (scaledError expected (joined first rest)) "streamer, two calls"
                && within tolerance64 (scaledError expected again) "streamer, after Reset")

        testPropertyWithConfig config "relative position: q_t' . k_s' = sum_j cos((t-s) theta_j) (q . k)_j + sin((t-s) theta_j) (q x k)_j per head (float64, 1e-12)" <|
            Prop.forAll draws (fun w ->
                let g = graphOf w
                let r = rotaryOf g
                let q, k = inputOf w w.Seed, inputOf w (w.Seed + 1)
                let q', k' = compiled g ExecutionMode.Auto q, compiled g ExecutionMode.Auto k
                let time = min w.Time 24
                [ for b in 0 .. w.Batch - 1 do
                    for h in 0 .. w.Heads - 1 do
                        for t in 0 .. time - 1 do
                            for s in 0 .. time - 1 ->
                                let mutable dot, expected, scale = 0.0, 0.0, 1.0
                                for j in 0 .. r.HeadWidth / 2 - 1 do
                                    let e, o = h * r.HeadWidth + 2 * j, h * r.HeadWidth + 2 * j + 1
                                    dot <- dot + q'.[b, t, e] * k'.[b, s, e] + q'.[b, t, o] * k'.[b, s, o]
                                    let phi = float (t - s) * r.Theta j
                                    let inner, cross = q.[b, t, e] * k.[b, s, e] + q.[b, t, o] * k.[b, s, o], q.[b, t, e] * k.[b, s, o] - q.[b, t, o] * k.[b, s, e]
                                    expected <- expected + cos phi * inner + sin phi * cross
                                    scale <- scale + abs inner + abs cross
                                abs (dot - expected) / scale ]
                |> List.forall (fun error -> within tolerance64 error "q_t' . k_s' against the pair dots rotated by (t - s) theta_j"))

        testPropertyWithConfig config "a rotation: every pair keeps its norm, compiled and reference (float64, 1e-12)" <|
            Prop.forAll draws (fun w ->
                let g = graphOf w
                let x = inputOf w w.Seed
                [ "reference", reference g x; "compiled", compiled g ExecutionMode.Auto x ]
                |> List.forall (fun (what, y) ->
                    let mutable worst = 0.0
                    for b in 0 .. w.Batch - 1 do
                        for t in 0 .. w.Time - 1 do
                            for p in 0 .. w.Width / 2 - 1 do
                                let before = sqrt (x.[b, t, 2 * p] ** 2.0 + x.[b, t, 2 * p + 1] ** 2.0)
                                let after = sqrt (y.[b, t, 2 * p] ** 2.0 + y.[b, t, 2 * p + 1] ** 2.0)
                                worst <- max worst (abs (after - before) / (1.0 + before))
                    within tolerance64 worst what))

        testPropertyWithConfig config "gradient: d(sum y * p)/dx = p rotated back by -t theta_j (the reference with angles negated), every mode (float64, 1e-12)" <|
            Prop.forAll draws (fun w ->
                let g = graphOf w
                let x = inputOf w w.Seed
                let probe = inputOf w (w.Seed + 1)
                let expected = reference (reversed g) probe
                modes |> List.forall (fun mode ->
                    let model = g.Compile(CompileOptions(DType = f64, Execution = mode))
                    let input = (toTensor f64 x).requires_grad_(true)
                    backwardOf (fun () -> (model.Forward([| input |]).[0] * toTensor f64 probe).sum())
                    within tolerance64 (scaledError expected (ofTensor input.grad)) (sprintf "%A, input gradient" mode)))

        testCase "errors: an odd head width, a width the heads do not divide, and Angles of the wrong shape or not finite name the field" <| fun () ->
            let x = Model.Input("x", 6)
            refusedNaming [ "Width / Heads"; "odd"; "Heads = 1" ] (fun () -> x.Rotary(2, name = "rotary").Build())
            refusedNaming [ "Width = 6"; "not divisible by Heads = 4"; "Heads = 3" ] (fun () -> x.Rotary(4, name = "rotary").Build())
            refusedNaming [ "Angles [2]"; "Angles [3]" ] (fun () -> x.Rotary(1, [| 0.1; 0.2 |], name = "rotary").Build())
            refusedNaming [ "Angles"; "NaN" ] (fun () -> x.Rotary(1, [| 0.1; nan; 0.2 |], name = "rotary").Build())
            refusedNaming [ "odd"; "project to an even width" ] (fun () -> Model.Input("x", 5).Rotary(1, name = "rotary").Build())
            refusedNaming [ "heads = 0" ] (fun () -> x.Rotary(0, name = "rotary").Build())
            let matrix = DoubleTensor.FromShape([| 3; 1 |], [| 0.1; 0.2; 0.3 |])
            refusedNaming [ "Angles [3, 1]"; "Angles [3]" ] (fun () -> Graph.Create([ Input("x", 6) :> Node; Rotary("rotary", NodeId 0, 6, 1, matrix) ], [ NodeId 1 ]))

        testCase "graph files keep the angles, given or not, and the F# layer builds the C# graph" <| fun () ->
            for g in [ Model.Input("x", 8).Rotary(2, [| 0.5; -1.25 |], name = "rotary").Build(); Model.Input("x", 8).Rotary(2).Build() ] do
                let path = Path.Combine(Path.GetTempPath(), $"duality-{Guid.NewGuid():N}.safetensors")
                try
                    GraphFile.Save(g, path)
                    let loaded = GraphFile.Load path
                    Expect.equal loaded g "the loaded graph equals the saved one"
                    Expect.equal (rotaryOf loaded).Angles (rotaryOf g).Angles "the angles"
                finally
                    File.Delete path
            let fsharp =
                Duality.FSharp.Model.input "x" 8 |> Duality.FSharp.Layer.rotaryWith 2 (Some [| 0.5; -1.25 |]) (Some "rotary") |> Duality.FSharp.Model.build
            Expect.equal fsharp (Model.Input("x", 8).Rotary(2, [| 0.5; -1.25 |], name = "rotary").Build()) "F# = C#"
    ]
