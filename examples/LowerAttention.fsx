// A linear attention written in F#, lowered to the gated RNN that computes it exactly, checked for
// equivalence (a report, then a property over random weights and inputs), and raised back.
#load "Duality.fsx"

open Duality.Ir
open Duality.FSharp
open Duality.Passes
open Duality.Testing

let attention =
    Model.input "x" 6
    |> Layer.attention { Attention.linear 2 3 3 with Decay = Decay.Gamma 0.95; Out = Some 6; Name = Some "attention" }
    |> Model.build
    |> Graph.withWeights 42

let lowering = attention |> Graph.lowerWith Construction.Smallest
let rnn = lowering.Graph
for r in lowering.Lowered do
    printfn "%s -> %A construction: %d recurrent neurons, %d output neurons, %d parameters (formula %d)"
        r.Node r.Construction r.RecurrentNeurons r.OutputNeurons r.Parameters r.FormulaParameters

printfn "%A" rnn
printfn "%A" (Graph.equivalence attention rnn)

// the same claim as a law: for any weights of this architecture and any inputs
let architecture = Model.input "x" 6 |> Layer.attention (Attention.linear 2 3 3) |> Model.build
Laws.checkWith 25 (Laws.preserves 1e-10 Graph.lower architecture)
printfn "lowering preserves the function for 25 random weight and input samples"

let raised = Graph.raise rnn
match raised.Nodes |> Seq.map (fun (Kind k) -> k) |> Seq.tryPick (function AttentionNode a -> Some a | _ -> None) with
| Some a -> printfn "raised back: %s" (a.Describe())
| None -> failwith "the lowered layer was not raised"
printfn "%A" (Graph.equivalence attention raised)
