// An F# script outside the repository using the packages from a local feed; no build step runs, so
// Duality.Compiler's NativeSetup loads a fixed-up TorchSharp native library where the system needs one.
#i "nuget: __FEED__"
#r "nuget: Duality.FSharp, __VERSION__"
#r "nuget: Duality.Compiler, __VERSION__"

open Duality.Ir
open Duality.FSharp
open TorchSharp

let transformer =
    Model.input "x" 6
    |> layers {
        Layer.projection 8 >> Layer.named "embed"
        residual "layer" {
            Layer.rmsNorm
            Layer.attention { Attention.linear 2 3 3 with Decay = Decay.Gamma 0.9; Out = Some 8 }
        }
        Layer.projection 2
    }
    |> Model.build
    |> Graph.withWeights 7

let rnn = Graph.lower transformer
let report = Graph.equivalence transformer rnn
printfn "%O" report

let model = Graph.compile rnn
let y = model.forward (torch.randn (2L, 16L, 6L))
printfn "compiled gated RNN: output %A" y.shape
printfn "native library: %s" (Duality.Runtime.NativeSetup.Ensure() |> Option.ofObj |> Option.defaultValue "loaded as found (nothing to fix)")

let attentionLeft = Graph.nodes rnn |> List.exists (function Kind (AttentionNode _) -> true | _ -> false)
let ok = report.Equivalent && not attentionLeft && y.shape = [| 2L; 16L; 2L |]
printfn (if ok then "F# consumer: ok" else "F# consumer: FAILED")
exit (if ok then 0 else 1)
