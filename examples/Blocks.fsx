// Two recurrent blocks written as F# pipelines: a Hawk/Griffin-style gated block with an
// input-dependent decay, and an LRU block with a complex diagonal recurrence. Both are compiled,
// run, and checked: streaming one step at a time computes the full sequence.
#load "Duality.fsx"

open Duality.Ir
open Duality.FSharp
open Duality.Testing
open TorchSharp

let width = 16

/// Griffin's recurrent block, in spirit: a GELU gate branch times a branch through a recurrence whose
/// decay lambda_t = sigmoid(w . x_t) depends on the input (the RG-LRU's role), then a projection.
let hawk =
    residual "hawk" {
        Layer.rmsNorm
        gated {
            value (Layer.projection width >> Layer.recurrence (Lambda.InputDependent(Layer.projection width)))
            gate (Layer.projection width >> Layer.gelu)
        }
        Layer.projection width
    }

/// An LRU block: a complex diagonal recurrence read out as [re; im], projected back, then an MLP.
let lru =
    residual "lru" {
        Layer.layerNorm
        Layer.projection width
        Layer.recurrence (Lambda.Complex(ComplexReadout.RealAndImaginary, None))
        Layer.projection width
    }

let mlp = residual "mlp" { Layer.rmsNorm; Layer.projection (2 * width); Layer.gelu; Layer.projection width }

let model =
    Model.input "x" 4
    |> layers {
        Layer.projection width >> Layer.named "embed"
        hawk
        lru
        mlp
        Layer.projection 1 >> Layer.named "readout"
    }
    |> Model.build

printfn "%A" model

let compiled = model |> Graph.compile
let x = torch.randn(2L, 50L, 4L)
let y = compiled |> Compiled.run x
printfn "input %A -> output %A, %d parameters" x.shape y.shape (Compiled.parameterCount compiled)

// token by token with the allocation-free streamer (batch 1): the last output matches the full sequence
let streamer = compiled |> Compiled.streamer 1
let first = x.[0].contiguous().data<float32>().ToArray()
let mutable last = 0.0f
for t in 0 .. 49 do last <- (streamer.Step(System.ReadOnlySpan(first, 4 * t, 4))).[0]
printfn "streamer, 50 tokens: last output %.5f, full sequence %.5f" last (y.[0, 49, 0].item<float32>())

let kinds = Graph.kinds model |> List.countBy (function
    | RecurrenceNode _ -> "recurrence" | ProjectionNode _ -> "projection" | GateNode _ -> "gate"
    | InputNode _ | AttentionNode _ | ActivationNode _ | AddNode _ | ConcatNode _ | SliceNode _
    | LayerNormNode _ | RmsNormNode _ | ScaleNode _ -> "other")
printfn "node kinds: %A" kinds

Laws.checkWith 20 (Laws.stepEqualsFull 1e-10 model)
printfn "step form = full sequence form on 20 random weight and input samples"
