// A small hybrid model composed from the Blocks surface, as Griffin composes its recurrent and attention
// blocks: pre-norm residual blocks of Griffin's recurrent block (RG-LRU), a decaying linear attention,
// RetNet's retention, GLA, Mamba-2, mLSTM, minGRU and an LRU, each followed by Griffin's gated MLP. It is compiled, run, streamed token by token, checked (step form = full sequence),
// and its attention blocks (the attention and the gated linear attentions of RetNet, GLA, Mamba-2 and mLSTM) are lowered
// to the gated RNNs that compute them exactly.
#load "Duality.fsx"

open Duality.Ir
open Duality.FSharp
open Duality.Testing
open TorchSharp

let width = 16

/// A pre-norm residual block around any mixer, then a pre-norm residual gated MLP (expansion 3).
let block name (mixer: Layers) : Layers =
    Layer.residualNamed name (Layer.rmsNorm >> mixer)
    >> Layer.residualNamed (name + "_mlp") (Layer.rmsNorm >> Blocks.gatedMlp 3)

let model =
    Model.input "x" 4
    |> layers {
        Layer.projection width >> Layer.named "embed"
        block "griffin" (Blocks.griffinRecurrent width 2 4)
        block "attention" (Layer.attention { Attention.linear 2 8 8 with Decay = Decay.Gamma 0.9; Out = Some width })
        block "retnet" (Blocks.retNetWith 2 (Some 4) (Some 8) None)
        block "gla" (Blocks.glaWith 2 (Some 4) (Some 8) 4 16.0 None)
        block "mamba2" (Blocks.mamba2With (Some 32) 8 4 1 4 None)
        block "mlstm" (Blocks.mlstmWith 2 (Some 4) (Some 8) None)
        block "mingru" (Blocks.minGru width)
        block "lru" (Blocks.lru 8)
        Layer.projection 1 >> Layer.named "readout"
    }
    |> Model.build
    |> Graph.withWeights 7

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

Laws.checkWith 20 (Laws.stepEqualsFull 1e-10 model)
printfn "step form = full sequence form on 20 random weight and input samples"

// the attention block becomes a gated RNN: the whole model is then recurrent, and computes the same function
let recurrent = model |> Graph.lower
let report = Graph.equivalence model recurrent
printfn "%A" report
if not report.Equivalent then failwith "the lowered model computes another function"
let attentions g =
    g |> Graph.kinds |> List.filter (function AttentionNode _ | GatedLinearAttentionNode _ -> true | _ -> false) |> List.length
printfn "attention layers: %d before lowering, %d after" (attentions model) (attentions recurrent)
