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

/// The input gradients of a single-input graph under output gradient dy (float64, one mode).
let private inputGradients (g: Graph) mode (x: Sequence) (dy: Sequence) =
    let model = g.Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = mode))
    let input = (toTensor torch.ScalarType.Float64 x).requires_grad_(true)
    torch.autograd.backward([| model.forward(input) |], [| toTensor torch.ScalarType.Float64 dy |])
    ofTensor input.grad

/// Steps (t, T) of a gradient.
let private after t (dx: Sequence) =
    Array3D.init (Array3D.length1 dx) (Array3D.length2 dx - t - 1) (Array3D.length3 dx) (fun b s f -> dx.[b, t + 1 + s, f])

/// A NaN or infinity in the output's gradient at step t, every batch row, feature 0: the input gradients after t stay
/// finite and as they were, in every mode.
let private holdsBackward (g: Graph) (x: Sequence) t value =
    let dy = randomSequence (Random t) (Array3D.length1 x) (Array3D.length2 x) g.Widths.[g.Outputs.[0].Index] 1.0
    let poisonedDy = Array3D.init (Array3D.length1 dy) (Array3D.length2 dy) (Array3D.length3 dy) (fun b s f -> if s = t && f = 0 then value else dy.[b, s, f])
    [ for mode in [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ] do
          let clean, dirty = after t (inputGradients g mode x dy), after t (inputGradients g mode x poisonedDy)
          (finite dirty || failwithf "%A: an input gradient after step %d is not finite after %f in the output's gradient at step %d" mode t value t)
          && within 1e-10 (scaledError clean dirty) (sprintf "%A, input gradients after the poisoned step %d" mode t) ]
    |> List.forall id

/// Batch row r of every output, and of the input gradients under dy (single-input graphs), in one mode.
let private row r (y: Sequence) = Array3D.init 1 (Array3D.length2 y) (Array3D.length3 y) (fun _ s f -> y.[r, s, f])

/// A NaN or infinity in the last batch row's input (every step, feature 0), and one in its output gradient: every other
/// row's outputs and input gradients stay finite and as they were, in every mode.
let private rowsApart (g: Graph) (x: Sequence) value =
    let rows = Array3D.length1 x
    let poisonedX = Array3D.init rows (Array3D.length2 x) (Array3D.length3 x) (fun b s f -> if b = rows - 1 && f = 0 then value else x.[b, s, f])
    let dy = randomSequence (Random rows) rows (Array3D.length2 x) g.Widths.[g.Outputs.[0].Index] 1.0
    let poisonedDy = Array3D.init rows (Array3D.length2 dy) (Array3D.length3 dy) (fun b s f -> if b = rows - 1 && f = 0 then value else dy.[b, s, f])
    [ for mode in [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ] do
          for r in 0 .. rows - 2 do
              for what, clean, dirty in
                  [ "outputs", (outputs g mode false [| x |]).[0], (outputs g mode false [| poisonedX |]).[0]
                    "input gradients", inputGradients g mode x dy, inputGradients g mode x poisonedDy ] do
                  let clean, dirty = row r clean, row r dirty
                  if not (finite dirty) then failwithf "%A: batch row %d's %s are not finite after %f in the last row" mode r what value
                  within 1e-10 (scaledError clean dirty) (sprintf "%A, batch row %d's %s" mode r what) |> ignore ]
    |> ignore
    true

/// Attention of every kernel and decay on a 4-wide input.
let private attentionKinds () =
    let x0 = Model.Input("x", 4)
    [ x0.Attention(2, 3, 3, kernel = AttentionKernel.Softmax)
      x0.Attention(2, 3, 3)
      x0.Attention(2, 3, 3, decay = Nullable 0.9)
      x0.Attention(2, 3, 3, decay = Nullable 0.9, decayPhase = Nullable 0.3)
      x0.Attention(2, 3, 3, inputDependentDecay = true)
      x0.Attention(2, 3, 3, featureMap = ActivationKind.EluPlusOne) ]

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
            let graphs = attentionKinds () |> List.map (fun b -> InitializeWeights.Run(b.Build(), 3))
            let inputs = [| randomSequence (Random 5) 2 150 4 1.0 |]
            for g in graphs do
                for t in [ 3; 64; 130 ] do
                    holds g inputs t nan |> ignore
                    holds g inputs t infinity |> ignore

        testPropertyWithConfig config "a NaN or infinity in the output's gradient at step t leaves every input gradient after t finite and unchanged, in every mode (float64, <= 1e-10)" <|
            Prop.forAll arbCase (fun c ->
                let g = c.Graph
                let time = Array3D.length2 c.Inputs.[0]
                (not (causal g) || c.Inputs.Length <> 1 || g.Outputs.Count <> 1 || time < 2) ||
                    (let t = c.Seed % (time - 1)
                     holdsBackward g c.Inputs.[0] t nan && holdsBackward g c.Inputs.[0] t infinity))

        testPropertyWithConfig config "a NaN or infinity in one batch row, in the input or the output's gradient, leaves every other row's outputs and input gradients finite and unchanged, in every mode (float64, <= 1e-10)" <|
            Prop.forAll arbCase (fun c ->
                c.Inputs.Length <> 1 || c.Graph.Outputs.Count <> 1 || c.Batch < 2
                || (rowsApart c.Graph c.Inputs.[0] nan && rowsApart c.Graph c.Inputs.[0] infinity))

        testCase "the causal product's gradients: a NaN or infinity at a later step of x leaves the weights' gradient zero past the diagonal and finite before the step, and one in dy at an earlier step leaves x's gradient finite after it (float64, n = 1 to 9)" <| fun () ->
            for n in 1 .. 9 do
                for bad in [ nan; infinity ] do
                    let generator = new torch.Generator(uint64 n)
                    let weights () = Kernels.CausalMask.Fill(torch.randn([| 2L; int64 n; int64 n |], dtype = torch.ScalarType.Float64, generator = generator), 0.0).detach().requires_grad_(true)
                    let values () = torch.randn([| 2L; int64 n; 3L |], dtype = torch.ScalarType.Float64, generator = generator)
                    let step = n / 2
                    // x non-finite at the last step: dw[t, s] for s > t stays 0, and rows before the last stay finite
                    let (w, x) = (weights (), values ())
                    x.[1L, int64 (n - 1), 0L] <- torch.tensor(bad, dtype = torch.ScalarType.Float64)
                    torch.autograd.backward([| Kernels.CausalMask.Product(w, x.requires_grad_(true)) |], [| torch.ones([| 2L; int64 n; 3L |], dtype = torch.ScalarType.Float64) |])
                    let future = Kernels.CausalMask.Future(int64 n, w.device)
                    Expect.isTrue (w.grad.masked_select(future).eq(torch.tensor(0.0, dtype = torch.ScalarType.Float64)).all().item<bool>()) (sprintf "n %d, %g: dw past the diagonal is 0" n bad)
                    Expect.isTrue (w.grad.narrow(1L, 0L, int64 (n - 1)).isfinite().all().item<bool>()) (sprintf "n %d, %g: dw before the last step finite" n bad)
                    // dy non-finite at an early step: dx after it finite
                    let w = weights ()
                    let x = (values ()).requires_grad_(true)
                    let dy = torch.ones([| 2L; int64 n; 3L |], dtype = torch.ScalarType.Float64)
                    dy.[1L, int64 step, 0L] <- torch.tensor(bad, dtype = torch.ScalarType.Float64)
                    torch.autograd.backward([| Kernels.CausalMask.Product(w, x) |], [| dy |])
                    Expect.isTrue (x.grad.narrow(1L, int64 (step + 1), int64 (n - step - 1)).isfinite().all().item<bool>()) (sprintf "n %d, %g: dx after the step finite" n bad)

        testCase "attention of every kernel and decay, and every block family, keep later input gradients from a non-finite output gradient, and other batch rows from a non-finite row, at sequence lengths beyond the chunk (float64, <= 1e-10)" <| fun () ->
            let blocks =
                [ Blocks.RetNet(2, 4, 4); Blocks.Gla(2, 4, 4, 2, 16.0); Blocks.Mamba2(8, 4, 4, 1, 4); Blocks.Mlstm(2, 4, 4)
                  Blocks.GriffinRecurrent(4); Blocks.RgLru(); Blocks.Lru(4); Blocks.MinGru(4); Blocks.MinLstm(4) ]
                |> List.map (fun b -> Model.Input("x", 4).Then(b))
            let x = randomSequence (Random 5) 2 150 4 1.0
            for g in attentionKinds () @ blocks |> List.map (fun b -> InitializeWeights.Run(b.Build(), 3)) do
                for t in [ 0; 64; 130 ] do
                    holdsBackward g x t nan |> ignore
                    holdsBackward g x t infinity |> ignore
                rowsApart g x nan |> ignore
    ]
