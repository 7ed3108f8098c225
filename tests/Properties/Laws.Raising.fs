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
open Duality.Testing.Sequences
open Duality.Testing.Generators


let config = { FsCheckConfig.defaultConfig with maxTest = 100; endSize = 64 }

let private equivalent (a: Graph) (b: Graph) =
    let report = Equivalence.Check(a, b, EquivalenceOptions(Lengths = [| 1; 5; 17 |], Samples = 2))
    if report.Equivalent then true else failwithf "%O" report

let private attentionOf (g: Graph) = g.Nodes |> Seq.pick (function :? Attention as a -> Some a | _ -> None)

let tests =
    testList "raising" [
        testPropertyWithConfig config "RaiseAttention: raising a lowered layer (every decay) gives back an attention with the same function (float64)" <|
            Prop.forAll (Arb.fromGen (Gen.zip attentionLayer (Gen.elements [ Construction.Smallest; Construction.Full; Construction.Compressed ])))
                (fun (l, construction) ->
                    (construction <> Construction.Compressed || l.FeatureMap = ActivationKind.Identity) ==> lazy (
                        let g = attentionGraph l
                        let raising = RaiseAttention.Run(LowerAttention.ToGatedRnn(g, construction))
                        raising.Raised.Count = 1 && raising.Graph.Nodes.Count = g.Nodes.Count && equivalent g raising.Graph))

        testPropertyWithConfig config "RaiseAttention: the full construction is read back with the attention's own heads and widths" <|
            Prop.forAll arbLayer (fun l ->
                // rows are generic (pairwise non-parallel) once the input has two or more features
                (l.Width >= 2) ==> lazy (
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

        testCase "a compiled layer whose weights turn NaN runs node by node, and the NaN propagates" <| fun () ->
            let g = InitializeWeights.Run(Model.Input("x", 3).Attention(1, 3, 3, name = "a").Build(), 2)
            let model = LowerAttention.ToGatedRnn(g, Construction.Compressed).Compile(CompileOptions.Float64)
            let x = TorchSharp.torch.ones(1L, 4L, 3L, dtype = TorchSharp.torch.ScalarType.Float64)
            let run () = Duality.Properties.Support.noGrad (fun () -> model.forward(x))
            Expect.isFalse (run().isnan().any().item<bool>()) "finite as lowered"
            let key = model.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = "a/input_key.weight" then Some p else None)
            Duality.Properties.Support.noGrad (fun () -> key.index_fill_(0, TorchSharp.torch.tensor([| 1L |]), nan) |> ignore)
            Expect.isTrue (run().isnan().any().item<bool>()) "the NaN propagates"
            Expect.equal (model.FusedGroups.[0].Fused, model.FusedGroups.[0].NodeByNode) (1L, 1L) "fused as lowered, node by node with the NaN"

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

/// The invariances of paper.md section 6, applied to a lowered layer: permuted recurrent neurons,
/// input gates rescaled by alpha (output-gate columns by 1/alpha), swapped gate factors, output
/// neurons rescaled by c (readout columns by 1/c).
let perturbed (seed: int) (g: Graph) =
    let random = Random(seed)
    let node name = g.Nodes |> Seq.find (fun n -> n.Name.EndsWith(name: string))
    let matrix (t: DoubleTensor) = Array2D.init t.Shape.[0] t.Shape.[1] (fun r c -> t.[r, c])
    let vector (t: DoubleTensor) = Array.init t.Shape.[0] (fun i -> t.[i])
    let p (n: string) = node n :?> Projection
    let av, ak = p "/input_value", p "/input_key"
    let bg, bx = p "/output_value", p "/output_query"
    let outputGate = g.IdOf((node "/output").Name)
    let readout = g.Nodes |> Seq.pick (function :? Projection as q when q.Source = outputGate -> Some q | _ -> None)
    let memory = g.Nodes |> Seq.pick (function :? LinearRecurrence as r -> Some r | _ -> None)
    let n, m = memory.Width, bg.OutFeatures
    let order = Array.init n id |> Array.sortBy (fun _ -> random.Next())
    let alpha = Array.init n (fun _ -> (if random.Next(2) = 0 then -1.0 else 1.0) * (0.5 + random.NextDouble()))
    let swap = Array.init n (fun _ -> random.Next(2) = 0)
    let c = Array.init m (fun _ -> 0.5 + random.NextDouble())
    let swapOut = Array.init m (fun _ -> random.Next(2) = 0)
    let (va, vb), (ka, kb) = (matrix av.Weights.Weight, vector av.Weights.Bias), (matrix ak.Weights.Weight, vector ak.Weights.Bias)
    let d = av.InFeatures
    let newValue = Array2D.init n d (fun i f -> alpha.[i] * (if swap.[i] then ka.[order.[i], f] else va.[order.[i], f]))
    let newValueBias = Array.init n (fun i -> alpha.[i] * (if swap.[i] then kb.[order.[i]] else vb.[order.[i]]))
    let newKey = Array2D.init n d (fun i f -> if swap.[i] then va.[order.[i], f] else ka.[order.[i], f])
    let newKeyBias = Array.init n (fun i -> if swap.[i] then vb.[order.[i]] else kb.[order.[i]])
    let lambda = vector memory.Lambda
    let newLambda = Array.init n (fun i -> lambda.[order.[i]])
    let gm, xm, dm = matrix bg.Weights.Weight, matrix bx.Weights.Weight, matrix readout.Weights.Weight
    let column (w: double[,]) r i = w.[r, order.[i]] / alpha.[i]
    let newG = Array2D.init m n (fun r i -> c.[r] * (if swapOut.[r] then column xm r i else column gm r i))
    let newX = Array2D.init m n (fun r i -> if swapOut.[r] then column gm r i else column xm r i)
    let newD = Array2D.init readout.OutFeatures m (fun o r -> dm.[o, r] / c.[r])
    let replace (old: Node) (fresh: Node) (graph: Graph) = graph.WithNode(graph.IdOf old.Name, fresh)
    g
    |> replace av (Projection(av.Name, av.Source, d, n, true, ProjectionWeights(DoubleTensor.Matrix newValue, DoubleTensor.Vector newValueBias)))
    |> replace ak (Projection(ak.Name, ak.Source, d, n, true, ProjectionWeights(DoubleTensor.Matrix newKey, DoubleTensor.Vector newKeyBias)))
    |> replace memory (LinearRecurrence(memory.Name, memory.Source, n, Lambda = DoubleTensor.Vector newLambda))
    |> replace bg (Projection(bg.Name, bg.Source, n, m, false, ProjectionWeights(DoubleTensor.Matrix newG, null)))
    |> replace bx (Projection(bx.Name, bx.Source, n, m, false, ProjectionWeights(DoubleTensor.Matrix newX, null)))
    |> replace readout (Projection(readout.Name, readout.Source, m, readout.OutFeatures, false, ProjectionWeights(DoubleTensor.Matrix newD, null)))

let invariances =
    testPropertyWithConfig config "RaiseAttention: a lowered layer perturbed by the invariances of paper.md section 6 is still read back exactly" <|
        Prop.forAll arbLayer (fun l ->
            ((l.Decay = AttentionDecay.NoDecay || (match l.Decay with AttentionDecay.Gamma _ -> true | _ -> false)) && l.FeatureMap = ActivationKind.Identity) ==> lazy (
                let g = attentionGraph l
                let lowered = LowerAttention.ToGatedRnn(g, Construction.Full)
                let shuffled = perturbed l.Seed lowered
                let raising = RaiseAttention.Run(shuffled)
                equivalent g shuffled && raising.Raised.Count = 1 && equivalent g raising.Graph))
