// Trains a tiny gated RNN for a few hundred steps to output the running mean of its input, then
// reads the trained weights back into the graph.
#load "Duality.fsx"

open Duality
open Duality.Ir
open Duality.FSharp
open TorchSharp

torch.manual_seed 1L |> ignore

let model =
    Model.input "x" 1
    |> Layer.gate (Layer.projection 8 >> Layer.recurrence Lambda.Trainable) (Layer.projection 8) ActivationKind.Sigmoid
    |> Layer.projection 1
    |> Model.build

let compiled = model |> Graph.compileWith (CompileOptions(Seed = 1))
let optimizer = torch.optim.Adam(compiled.parameters(), 0.02)

let batch () =
    let x = torch.randn(16L, 20L, 1L)
    let steps = torch.arange(1L, 21L, dtype = torch.ScalarType.Float32).view(1L, 20L, 1L)
    x, x.cumsum(1L) / steps

let lossAt () =
    use _ = torch.no_grad()
    let x, target = batch ()
    (Compiled.run x compiled - target).square().mean().item<float32>()

let before = lossAt ()
for step in 1 .. 300 do
    use scope = torch.NewDisposeScope()
    let x, target = batch ()
    optimizer.zero_grad()
    let loss = (Compiled.run x compiled - target).square().mean()
    loss.backward()
    optimizer.step() |> ignore
    if step % 100 = 0 then printfn "step %d: loss %.5f" step (loss.item<float32>())
let after = lossAt ()
printfn "loss %.4f -> %.4f" before after
if not (after < before / 4.0f) then failwith "training did not reduce the loss"

let trained = Compiled.toGraph compiled
let lambdas = trained.Nodes |> Seq.pick (function :? LinearRecurrence as r -> Some r.Lambda | _ -> None)
printfn "learned eigenvalues: %s" (lambdas.Data |> Seq.map (sprintf "%.3f") |> String.concat " ")
