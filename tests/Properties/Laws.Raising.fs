/// Laws of RaiseAttention: gated-RNN layers of the paper's form are read back as attention.
module Duality.Properties.LawsRaising

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Verification
open Duality.Properties.Generators
open Duality.Properties.LawsLowering

let config = { FsCheckConfig.defaultConfig with maxTest = 100; endSize = 64 }

let private fixedDecay (l: AttentionLayer) = l.Decay <> InputDependent

let private equivalent (a: Graph) (b: Graph) =
    let report = Equivalence.Check(a, b, EquivalenceOptions(Lengths = [| 1; 5; 17 |], Samples = 2))
    if report.Equivalent then true else failwithf "%O" report

let private attentionOf (g: Graph) = g.Nodes |> Seq.pick (function :? Attention as a -> Some a | _ -> None)

let tests =
    testList "raising" [
        testPropertyWithConfig config "RaiseAttention: raising a lowered layer gives back an attention with the same function (float64)" <|
            Prop.forAll (Arb.fromGen (Gen.zip attentionLayer (Gen.elements [ Construction.Smallest; Construction.Full; Construction.Compressed ])))
                (fun (l, construction) ->
                    (fixedDecay l && (construction <> Construction.Compressed || l.FeatureMap = ActivationKind.Identity)) ==> lazy (
                        let g = attentionGraph l
                        let raising = RaiseAttention.Run(LowerAttention.ToGatedRnn(g, construction))
                        raising.Raised.Count = 1 && raising.Graph.Nodes.Count = g.Nodes.Count && equivalent g raising.Graph))

        testPropertyWithConfig config "RaiseAttention: the full construction is read back with the attention's own heads and widths" <|
            Prop.forAll arbLayer (fun l ->
                // rows are generic (pairwise non-parallel) once the input has two or more features
                (fixedDecay l && l.Width >= 2) ==> lazy (
                    let g = attentionGraph l
                    let a = attentionOf g
                    let raised = attentionOf (RaiseAttention.Run(LowerAttention.ToGatedRnn(g, Construction.Full))).Graph
                    (raised.Heads, raised.KeyWidth, raised.ValueWidth) = (a.Heads, a.KeyWidth, a.ValueWidth)
                    || failwithf "raised %d x (k %d, v %d) from %d x (k %d, v %d)" raised.Heads raised.KeyWidth raised.ValueWidth a.Heads a.KeyWidth a.ValueWidth))

        testCase "RaiseAttention: a gated RNN of another form is left alone, with a diagnostic naming the recurrence" <| fun () ->
            let g =
                InitializeWeights.Run(
                    Model.Input("x", 4)
                        .Gate((fun v -> v.Projection(6).LinearRecurrence(name = "memory")), (fun g -> g.Projection(6)), ActivationKind.SiLU)
                        .Projection(2).Build(), 0)
            let raising = RaiseAttention.Run(g)
            Expect.isTrue (obj.ReferenceEquals(raising.Graph, g)) "same instance"
            Expect.equal raising.Refused.[0].NodePath "gate/value/memory" "names the recurrence"

        testCase "RaiseAttention: the worked d = 2 example is read back exactly" <| fun () ->
            let m (rows: double list list) = DoubleTensor.Matrix(array2D rows)
            let weights = AttentionWeights(m [ [ 0.; 1. ]; [ 1.; 0. ] ], m [ [ 1.; 0. ]; [ 1.; 1. ] ], m [ [ 1.; 2. ]; [ 0.; 1. ] ], null)
            let g = Model.Input("x", 2).Attention(1, 2, 2, weights = weights, name = "attention").Build()
            for construction in [ Construction.Full; Construction.Compressed ] do
                let raised = (RaiseAttention.Run(LowerAttention.ToGatedRnn(g, construction))).Graph
                let x = Array3D.init 1 3 2 (fun _ t f -> [| [| 1.; 0. |]; [| 0.; 1. |]; [| 1.; 1. |] |].[t].[f])
                let y = Duality.Reference.ReferenceEvaluator.Evaluate(raised, [| x |]).[0]
                let expected = [| [| 1.; 0. |]; [| 1.; 0. |]; [| 13.; 4. |] |]
                for t in 0 .. 2 do
                    for f in 0 .. 1 do
                        Expect.floatClose Accuracy.veryHigh y.[0, t, f] expected.[t].[f] (sprintf "%A y[%d, %d]" construction t f)
    ]
