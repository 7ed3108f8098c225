/// Laws of the IR and the builders: determinism, structural equality, naming, immutability.
module Duality.Properties.LawsBuilders

open Expecto
open FsCheck
open FsCheck.FSharp
open Duality.Ir
open Duality.Builders
open Duality.Testing.Sequences
open Duality.Testing.Generators

let config = { FsCheckConfig.defaultConfig with maxTest = 200; endSize = 64 }

let tests =
    testList "builders" [
        testPropertyWithConfig config "building is deterministic: the same description builds Equals graphs with equal hashes" <|
            Prop.forAll arbArchitecture (fun a ->
                let g1, g2 = build a, build a
                not (obj.ReferenceEquals(g1, g2)) && g1 = g2 && g1.GetHashCode() = g2.GetHashCode())

        testPropertyWithConfig config "equality sees every field: renaming a node or adding weights makes a graph unequal" <|
            Prop.forAll arbArchitecture (fun a ->
                let g = build a
                let first = g.[NodeId 0] :?> Input
                let renamed = g.WithNode(NodeId 0, Input("renamed", first.Features))
                let weighted = Duality.Passes.InitializeWeights.Run(g, 0)
                renamed <> g && (g.HasAllWeights || weighted <> g))

        testPropertyWithConfig config "node ids follow construction order: every node reads only earlier nodes" <|
            Prop.forAll arbArchitecture (fun a ->
                let g = build a
                g.Nodes |> Seq.indexed |> Seq.forall (fun (i, n) -> n.Sources |> Seq.forall (fun s -> s.Index < i)))

        testPropertyWithConfig config "a rewrite that changes nothing returns the same instance" <|
            Prop.forAll arbArchitecture (fun a ->
                let g = Duality.Passes.InitializeWeights.Run(build a, 1)
                obj.ReferenceEquals(g.MapNodes(id), g) && obj.ReferenceEquals(Duality.Passes.InitializeWeights.Run(g, 2), g))

        testCase "builders are immutable: extending a builder leaves it unchanged" <| fun () ->
            let start = Model.Input("x", 4).Projection(8)
            let a = start.Projection(2).Build()
            let b = start.RmsNorm().Build()
            Expect.equal start.Nodes.Count 2 "the shared prefix still has two nodes"
            Expect.equal a.Nodes.Count 3 "branch a"
            Expect.equal b.Nodes.Count 3 "branch b"
            Expect.notEqual a b "the branches differ"

        testCase "default names are paths made unique within their scope" <| fun () ->
            let g =
                Model.Input("x", 4)
                    .Projection(4).Projection(4)
                    .Residual((fun b -> b.RmsNorm().Projection(4)), name = "block")
                    .Residual(fun b -> b.Projection(4))
                    .Build()
            let names = g.Nodes |> Seq.map (fun n -> n.Name) |> List.ofSeq
            Expect.equal names
                [ "x"; "projection"; "projection_2"; "block/rmsnorm"; "block/projection"; "block"
                  "residual/projection"; "residual" ] "names"

        testCase "a C# record graph and a builder graph are the same value" <| fun () ->
            let built = Model.Input("x", 3).Projection(5, name = "p").Sigmoid(name = "s").Build()
            let direct =
                Graph.Create(
                    [ Input("x", 3) :> Node
                      Projection("p", NodeId 0, 3, 5) :> Node
                      Activation("s", NodeId 1, ActivationKind.Sigmoid) :> Node ],
                    [ NodeId 2 ])
            Expect.equal built direct "structural equality"
            Expect.equal (built.GetHashCode()) (direct.GetHashCode()) "hash"

        testCase "graphs with several inputs and outputs keep their order" <| fun () ->
            let g =
                Model.Input("x", 3).Input("c", 2).ConcatWith("x").Projection(4, name = "mix").Output()
                    .Projection(1, name = "score").Output().Build()
            Expect.equal (g.InputNodes |> Seq.map (fun i -> i.Name) |> List.ofSeq) [ "x"; "c" ] "inputs"
            Expect.equal (g.Outputs |> Seq.map (fun o -> g.[o].Name) |> List.ofSeq) [ "mix"; "score" ] "outputs"
            Expect.equal (g.WidthOf(g.IdOf "concat")) 5 "concat width"
    
        testCase "Graph.WithWeight sets one slot and keeps the others; its refusals name the node, the slot and the fix" <| fun () ->
            let g = Duality.Passes.InitializeWeights.Run(Model.Input("x", 2).Projection(3, name = "p").LinearRecurrence(name = "r").Build(), 1)
            let weight = DoubleTensor.Matrix(array2D [ [ 1.0; 2.0 ]; [ 3.0; 4.0 ]; [ 5.0; 6.0 ] ])
            let set = g.WithWeight("p", "Weight", weight)
            let slots (graph: Graph) name = graph.[graph.IdOf name].WeightSlots |> Seq.map (fun s -> s.Name, s.Value) |> Map.ofSeq
            Expect.equal (slots set "p").["Weight"] weight "the slot holds the value"
            Expect.equal (slots set "p").["Bias"] (slots g "p").["Bias"] "the other slot keeps its value"
            Expect.equal (set |> Duality.FSharp.Graph.withWeight "p" "Weight" weight) set "F# = C#"
            let refused (f: unit -> Graph) (words: string list) =
                let e = Expect.throwsC (f >> ignore) id
                Expect.isTrue (e :? GraphException) (sprintf "the library's exception: %s" e.Message)
                for w in words do Expect.stringContains e.Message w "named"
            refused (fun () -> g.WithWeight("q", "Weight", weight)) [ "q"; "unknown node" ]
            refused (fun () -> g.WithWeight("p", "Gain", weight)) [ "Gain"; "Weight, Bias" ]
            refused (fun () -> g.WithWeight("p", "Weight", DoubleTensor.Vector [| 1.0 |])) [ "p"; "Weight" ]
            let unweighted = Model.Input("x", 2).Projection(3, name = "p").Build()
            refused (fun () -> unweighted.WithWeight("p", "Weight", weight)) [ "Bias"; "InitializeWeights" ]
            let both = unweighted |> Duality.FSharp.Graph.withWeightValues "p" [ "Weight", weight; "Bias", DoubleTensor.Vector [| 0.0; 0.0; 0.0 |] ]
            Expect.isTrue both.HasAllWeights "set together"
    ]
