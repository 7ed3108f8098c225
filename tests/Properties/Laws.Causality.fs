/// Causality holds for non-finite values too: a NaN or infinity at step t changes no output before t, in every
/// execution mode, with gradients recorded or not, and in the streamer.
module Duality.Properties.LawsCausality

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Properties.Support
open Duality.Testing.Sequences
open Duality.Testing.Generators

let config = { FsCheckConfig.defaultConfig with maxTest = 100; endSize = 64 }

/// Steps [0, t) of every output.
let private before t (y: Sequence) = Array3D.init (Array3D.length1 y) t (Array3D.length3 y) (fun b s f -> y.[b, s, f])

let private finite (y: Sequence) = y |> Seq.cast<double> |> Seq.forall Double.IsFinite

/// The graph's outputs on x, in one mode, with gradients recorded or not (float64).
let private outputs (g: Graph) mode grad (inputs: Sequence[]) =
    let model = g.Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = mode))
    let run () = model.Forward(inputs |> Array.map (toTensor torch.ScalarType.Float64)) |> Array.map ofTensor
    if grad then run () else noGrad run

let private poisoned (value: float) t (inputs: Sequence[]) =
    inputs |> Array.map (fun x -> Array3D.init (Array3D.length1 x) (Array3D.length2 x) (Array3D.length3 x) (fun b s f -> if s = t && f = 0 then value else x.[b, s, f]))

let private holds (g: Graph) (inputs: Sequence[]) t value =
    let bad = poisoned value t inputs
    [ for mode in [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ] do
          for grad in [ false; true ] do
              let clean, dirty = outputs g mode grad inputs, outputs g mode grad bad
              Array.forall2 (fun c d ->
                  let c, d = before t c, before t d
                  (finite d || failwithf "%A (gradients %b): an output before step %d is not finite after %f at step %d" mode grad t value t)
                  && within 1e-10 (scaledError c d) (sprintf "%A (gradients %b), outputs before the poisoned step %d" mode grad t)) clean dirty ]
    |> List.forall id

let tests =
    testList "causality" [
        testPropertyWithConfig config "a NaN or infinity at step t leaves every output before t finite and unchanged, in every mode, with and without gradients (float64, <= 1e-10)" <|
            Prop.forAll arbCase (fun c ->
                let g = c.Graph
                let inputs = c.Inputs
                let time = Array3D.length2 inputs.[0]
                (not (causal g) || time < 2) ||
                    (let t = 1 + c.Seed % (time - 1)
                     holds g inputs t nan && holds g inputs t infinity))

        testCase "attention of every kernel and decay keeps earlier outputs at sequence lengths beyond the chunk (float64, <= 1e-10)" <| fun () ->
            let x0 = Model.Input("x", 4)
            let graphs =
                [ x0.Attention(2, 3, 3, kernel = AttentionKernel.Softmax)
                  x0.Attention(2, 3, 3)
                  x0.Attention(2, 3, 3, decay = Nullable 0.9)
                  x0.Attention(2, 3, 3, decay = Nullable 0.9, decayPhase = Nullable 0.3)
                  x0.Attention(2, 3, 3, inputDependentDecay = true)
                  x0.Attention(2, 3, 3, featureMap = ActivationKind.EluPlusOne) ]
                |> List.map (fun b -> InitializeWeights.Run(b.Build(), 3))
            let inputs = [| randomSequence (Random 5) 2 150 4 1.0 |]
            for g in graphs do
                for t in [ 3; 64; 130 ] do
                    holds g inputs t nan |> ignore
                    holds g inputs t infinity |> ignore
    ]
