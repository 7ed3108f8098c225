/// Laws of the F# surface: one core with the C# builders, computation expressions, patterns, and
/// the property kit users get.
module Duality.Properties.LawsFSharp

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Duality.Ir
open Duality.FSharp
open Duality.Testing
open Duality.Testing.Generators

let config = { FsCheckConfig.defaultConfig with maxTest = 200; endSize = 64 }

/// The same architecture description, written with the F# functions.
let private applyFSharp (s: Sequence) op : Sequence =
    let w = s.Width.Value
    match op with
    | Project(o, true) -> s |> Layer.projection o
    | Project(o, false) -> s |> Layer.projectionNoBias o
    | GateOf(m, a) -> s |> Layer.gate (Layer.projection m) (Layer.projection m) a
    | SelfGate a -> s |> Layer.gateBy (Layer.projection w) a
    | Recurrence Trainable -> s |> Layer.recurrence Lambda.Trainable
    | Recurrence(Fixed l) -> s |> Layer.recurrence (Lambda.Fixed(Array.ofList l))
    | Recurrence(Complex(readout, None)) -> s |> Layer.recurrence (Lambda.Complex(readout, None))
    | Recurrence(Complex(readout, Some h0)) -> s |> Layer.recurrenceFrom (Array.ofList h0) (Lambda.Complex(readout, None))
    | Recurrence(Decay shared) -> s |> Layer.recurrence (Lambda.InputDependent(Layer.projection (if shared then 1 else w)))
    | Recurrence(RealWithInitialState h0) -> s |> Layer.recurrenceFrom (Array.ofList h0) Lambda.Trainable
    | AttentionOp a ->
        s |> Layer.attention { Attention.linear a.Heads a.Key a.Value with
                                 Out = a.Out; Causal = a.Causal; Kernel = a.Kernel; FeatureMap = a.FeatureMap; Decay = a.Decay }
    | Act k -> s |> Layer.activation k
    | ResidualProjection -> s |> Layer.residual (Layer.rmsNorm >> Layer.projection w)
    | ConcatOf(x, y) -> s |> Layer.concat [ Layer.projection x; Layer.projection y ]
    | SliceOf(start, length) -> s |> Layer.slice start length
    | LayerNormOp -> s |> Layer.layerNorm
    | RmsNormOp -> s |> Layer.rmsNorm
    | ScaleOp f -> s |> Layer.scale f
    | ConvolutionOp k -> s |> Layer.causalConv1d k
    | MarkOutput -> s |> Layer.output

let buildFSharp (a: Architecture) =
    let start =
        match a.Second with
        | None -> Model.input "x" a.Input
        | Some k -> Model.input "x" a.Input |> Layer.input "context" k |> Layer.concatWith [ "x" ]
    a.Ops |> List.fold applyFSharp start |> Layer.output |> Model.build

let tests =
    testList "F#" [
        testPropertyWithConfig config "C# and F# declarations build equal graphs" <|
            Prop.forAll arbArchitecture (fun a ->
                let csharp, fsharp = build a, buildFSharp a
                csharp = fsharp && csharp.GetHashCode() = fsharp.GetHashCode())

        testPropertyWithConfig config "every node matches exactly one NodeKind case" <|
            Prop.forAll arbArchitecture (fun a ->
                let g = build a
                List.zip (Graph.nodes g) (Graph.kinds g)
                |> List.forall (fun (node, kind) ->
                    match kind with
                    | InputNode n -> obj.ReferenceEquals(n, node)
                    | ProjectionNode n -> obj.ReferenceEquals(n, node)
                    | GateNode n -> obj.ReferenceEquals(n, node)
                    | RecurrenceNode n -> obj.ReferenceEquals(n, node)
                    | AttentionNode n -> obj.ReferenceEquals(n, node)
                    | ActivationNode n -> obj.ReferenceEquals(n, node)
                    | AddNode n -> obj.ReferenceEquals(n, node)
                    | ConcatNode n -> obj.ReferenceEquals(n, node)
                    | SliceNode n -> obj.ReferenceEquals(n, node)
                    | LayerNormNode n -> obj.ReferenceEquals(n, node)
                    | RmsNormNode n -> obj.ReferenceEquals(n, node)
                    | ScaleNode n -> obj.ReferenceEquals(n, node)
                    | CausalConv1dNode n -> obj.ReferenceEquals(n, node)))

        testCase "computation expressions build what the C# builders build" <| fun () ->
            let fsharp =
                Model.input "x" 4
                |> layers {
                    Layer.projection 8 >> Layer.named "embed"
                    residual "block1" {
                        Layer.rmsNorm
                        gated {
                            value (Layer.projection 8 >> Layer.recurrence Lambda.Trainable)
                            gate (Layer.projection 8)
                            activation ActivationKind.SiLU
                        }
                    }
                    block "head" { Layer.projection 2 }
                }
                |> Model.build
            let csharp =
                Duality.Builders.Model.Input("x", 4)
                    .Projection(8, name = "embed")
                    .Residual((fun b ->
                        b.RmsNorm().Gate((fun v -> v.Projection(8).LinearRecurrence()), (fun g -> g.Projection(8)), ActivationKind.SiLU)),
                        name = "block1")
                    .Scope("head", fun b -> b.Projection(2))
                    .Build()
            Expect.equal fsharp csharp "same graph"

        testCase "tryBuild returns every problem as an Error" <| fun () ->
            match Model.input "x" 4 |> Layer.slice 2 5 |> Layer.from "x" |> Layer.projection 3 |> Layer.slice 4 1 |> Model.tryBuild with
            | Ok _ -> failtest "expected errors"
            | Error problems -> Expect.equal (problems |> List.map (fun d -> d.NodePath)) [ "slice"; "slice_2" ] "both slices"

        testCase "tryLower says why softmax attention stays attention" <| fun () ->
            let g = Model.input "x" 3 |> Layer.attention (Attention.softmax 1 2 2) |> Model.build |> Graph.withWeights 0
            match Graph.tryLower g with
            | Ok _ -> failtest "softmax has no exact recurrent form"
            | Error [ d ] -> Expect.stringContains d.Received "not polynomial" "the reason"
            | Error other -> failtestf "one diagnostic expected, got %A" other

        testCase "a lowered gated linear attention, compiled from F#, runs as one structure-aware group and raises back" <| fun () ->
            let attention = Model.input "x" 4 |> Layer.attention { Attention.linear 2 3 2 with Decay = Decay.Gated; Out = Some 4 } |> Model.build |> Graph.withWeights 1
            let rnn = Graph.lower attention
            let m = Graph.compile64 rnn
            Duality.Properties.Support.noGrad (fun () -> m |> Compiled.run (TorchSharp.torch.ones(2L, 5L, 4L, dtype = TorchSharp.torch.ScalarType.Float64))) |> ignore
            match Compiled.fusedGroups m with
            | [ group ] -> Expect.equal (group.Node, group.Fused) ("attention", 1L) "one fused pass"
            | groups -> failtestf "one group expected, got %A" groups
            Laws.checkWith 10 (Laws.preserves 1e-10 Graph.raise rnn)

        testCase "the kit: lowering preserves the function of a linear attention, for random weights and inputs" <| fun () ->
            let g = Model.input "x" 4 |> Layer.attention { Attention.linear 2 3 2 with Decay = Decay.Gamma 0.9; Out = Some 4 } |> Model.build
            Laws.checkWith 30 (Laws.preserves 1e-10 Graph.lower g)

        testCase "the kit: the step form equals the full form of a gated RNN block" <| fun () ->
            let g =
                Model.input "x" 3
                |> Layer.gate (Layer.projection 5 >> Layer.recurrence (Lambda.Complex(ComplexReadout.RealPart, None))) (Layer.projection 5) ActivationKind.Sigmoid
                |> Layer.projection 2
                |> Model.build
            Laws.checkWith 30 (Laws.stepEqualsFull 1e-10 g)

        testCase "the kit: a rewrite that changes the function fails, shrunk to one step of one sequence" <| fun () ->
            let g = Model.input "x" 2 |> Layer.recurrence Lambda.Trainable |> Model.build
            let wrong (graph: Graph) =
                Graph.Create(Seq.append graph.Nodes [ Scale("wrong", graph.Outputs.[0], 1.001) ], [ NodeId graph.Nodes.Count ])
            let message =
                try
                    Laws.checkWith 50 (Laws.sameFunction 1e-10 (fun seed ->
                        let a = Graph.withWeights seed g
                        a, wrong a))
                    ""
                with e -> e.Message
            Expect.stringContains message "Time = 1" "shrunk to one step"
            Expect.stringContains message "Batch = 1" "shrunk to one sequence"
    ]
