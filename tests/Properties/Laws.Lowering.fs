/// Laws of LowerAttention: causal linear attention compiles exactly into a gated RNN.
module Duality.Properties.LawsLowering

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Verification
open Duality.Properties.Support
open Duality.Testing.Sequences
open Duality.Testing.Generators

let config = { FsCheckConfig.defaultConfig with maxTest = 100; endSize = 64 }

let private inputsOf (l: AttentionLayer) dtype =
    let random = Random(l.Seed)
    [| randomSequence random l.Batch l.Time l.Width 1.0 |> toTensor dtype |]

let private outputs (g: Graph) dtype (inputs: torch.Tensor[]) =
    noGrad (fun () -> g.Compile(CompileOptions(DType = dtype)).Forward(inputs) |> Array.map ofTensor)

let private preserves tolerance dtype construction (l: AttentionLayer) =
    let g = attentionGraph l
    let lowered = (LowerAttention.Run(g, construction)).Graph
    let inputs = inputsOf l dtype
    let e, a = outputs g dtype inputs, outputs lowered dtype inputs
    within tolerance (relativeError e.[0] a.[0]) "attention vs lowered"

let private f64 = torch.ScalarType.Float64

let private hasNoAttention (g: Graph) = g.Nodes |> Seq.forall (fun n -> not (n :? Attention))

let private array3D (rows: double list list list) =
    Array3D.init rows.Length rows.Head.Length rows.Head.Head.Length (fun i j k -> rows.[i].[j].[k])

/// d = 2 worked example of paper.md: both forms give (1,0), (1,0), (13,4).
let workedExample construction =
    let m (rows: double list list) = DoubleTensor.Matrix(array2D rows)
    let weights = AttentionWeights(m [ [ 0.; 1. ]; [ 1.; 0. ] ], m [ [ 1.; 0. ]; [ 1.; 1. ] ], m [ [ 1.; 2. ]; [ 0.; 1. ] ], null)
    let g = Model.Input("x", 2).Attention(1, 2, 2, weights = weights, name = "attention").Build()
    let x = array3D [ [ [ 1.; 0. ]; [ 0.; 1. ]; [ 1.; 1. ] ] ]
    let lowered = LowerAttention.ToGatedRnn(g, construction)
    let run graph = outputs graph f64 [| toTensor f64 x |]
    run g, run lowered, Duality.Reference.ReferenceEvaluator.Evaluate(lowered, [| x |])

let tests =
    testList "lowering" [
        testCase "one rule for every refusal: a feature map under the compressed construction and a layer too large for one tensor come back in Refused, never as an exception" <| fun () ->
            let featured = InitializeWeights.Run(Model.Input("x", 4).Attention(2, 3, 3, featureMap = ActivationKind.EluPlusOne, name = "a").Build(), 1)
            let lowering = LowerAttention.Run(featured, Construction.Compressed)
            Expect.equal lowering.Graph featured "left as it is"
            Expect.equal (lowering.Refused |> Seq.map (fun d -> d.NodePath) |> List.ofSeq) [ "a" ] "refused, naming the node"
            Expect.stringContains (string lowering.Refused.[0]) "Construction.Full" "the hint names the fix"
            // weights need not be drawn to be refused for size: Refusal reads only the sizes
            let huge = Attention("big", NodeId 0, 4, 1, 50000, 50000, Weights = (let z = DoubleTensor.FromShape([| 50000; 4 |], Array.zeroCreate 200000) in AttentionWeights(z, z, z, null)))
            match LowerAttention.Refusal(huge, Construction.Full) with
            | null -> failtest "a layer of 2.5e9 neurons was not refused"
            | d -> Expect.stringContains (string d) "2^31 - 1" "the refusal says why"
        testPropertyWithConfig config "LowerAttention: outputs are preserved (float64, relative error < 1e-10)" <|
            Prop.forAll arbLayer (preserves 1e-10 f64 Construction.Smallest)

        testPropertyWithConfig config "LowerAttention: the full construction preserves outputs (float64, < 1e-10)" <|
            Prop.forAll arbLayer (preserves 1e-10 f64 Construction.Full)

        testPropertyWithConfig config "LowerAttention: the compressed construction preserves outputs (float64, < 1e-10)" <|
            Prop.forAll arbLayer (fun l ->
                l.FeatureMap = ActivationKind.Identity ==> lazy (preserves 1e-10 f64 Construction.Compressed l))

        testPropertyWithConfig config "LowerAttention: outputs are preserved (float32, relative error < 1e-4)" <|
            Prop.forAll arbLayer (preserves 1e-4 torch.ScalarType.Float32 Construction.Smallest)

        testPropertyWithConfig config "LowerAttention: gradients with respect to the inputs are preserved (float64, < 1e-9)" <|
            Prop.forAll arbLayer (fun l ->
                let g = attentionGraph l
                let lowered = LowerAttention.ToGatedRnn(g)
                let gradient (graph: Graph) =
                    let x = (inputsOf l f64).[0].requires_grad_(true)
                    let y = graph.Compile(CompileOptions.Float64).forward(x)
                    let probe = torch.linspace(-1.0, 1.0, y.numel(), dtype = f64).reshape(y.shape)
                    backwardOf (fun () -> (y * probe).sum())
                    ofTensor x.grad
                within 1e-9 (relativeError (gradient g) (gradient lowered)) "input gradients")

        testPropertyWithConfig { config with maxTest = 40 } "LowerAttention: derivatives with respect to the attention's weights are preserved through the construction" <|
            Prop.forAll arbLayer (fun l ->
                // d/de L(lower(W + e D)) at e = 0 by central differences = <grad_W L(attention), D> by autograd
                let g = attentionGraph l
                let a = g.Nodes |> Seq.pick (function :? Attention as a -> Some a | _ -> None)
                let random = Random(l.Seed + 1)
                let direction (t: DoubleTensor) = DoubleTensor.FromShape(Array.ofSeq t.Shape, t.Data |> Seq.map (fun _ -> random.NextDouble() - 0.5) |> Array.ofSeq)
                let dq, dk, dv = direction a.Weights.Query, direction a.Weights.Key, direction a.Weights.Value
                let shifted (e: float) =
                    let add (t: DoubleTensor) (d: DoubleTensor) = DoubleTensor.FromShape(Array.ofSeq t.Shape, Seq.map2 (fun x y -> x + e * y) t.Data d.Data |> Array.ofSeq)
                    let w = a.Weights
                    g.WithNode(g.IdOf a.Name, Attention(a.Name, a.Source, a.InFeatures, a.Heads, a.KeyWidth, a.ValueWidth, a.Causal,
                                                        a.Kernel, a.FeatureMap, a.Decay, a.OutFeatures,
                                                        AttentionWeights(add w.Query dq, add w.Key dk, add w.Value dv, w.Output, w.DecayWeight, w.DecayBias),
                                                        a.DecayPhase, a.InputDependentDecay))
                let inputs = inputsOf l f64
                let loss (graph: Graph) = noGrad (fun () -> graph.Compile(CompileOptions.Float64).Forward(inputs).[0].square().sum().item<double>())
                // a small step: elu + 1 has a jump in its second derivative at 0, and a difference across it errs by
                // O(step) (1e-5 at step 1e-4 on one draw); rounding adds only about 1e-16 |L| / step
                let step = 1e-6
                let numeric = (loss (LowerAttention.ToGatedRnn(shifted step)) - loss (LowerAttention.ToGatedRnn(shifted -step))) / (2.0 * step)
                let model = g.Compile(CompileOptions.Float64)
                backwardOf (fun () -> model.Forward(inputs).[0].square().sum())
                let grads = model.named_parameters() |> Seq.map (fun struct (n, p) -> n, p.grad |> ofTensorFlat) |> Map.ofSeq
                let dot (name: string) (d: DoubleTensor) = Seq.map2 (*) grads.[a.Name + "." + name] d.Data |> Seq.sum
                let analytic = dot "query" dq + dot "key" dk + dot "value" dv
                within 1e-5 (abs (numeric - analytic) / (1.0 + abs analytic)) "directional derivative")

        testPropertyWithConfig config "LowerAttention: the lowered graph's step form = the attention's full-sequence form (float64, < 1e-10)" <|
            Prop.forAll arbLayer (fun l ->
                let g = attentionGraph l
                let lowered = LowerAttention.ToGatedRnn(g)
                let inputs = inputsOf l f64
                let full = outputs g f64 inputs
                let streamed = noGrad (fun () -> lowered.Compile(CompileOptions.Float64).ToStepForm().Unroll(inputs.[0]) |> ofTensor)
                within 1e-10 (relativeError full.[0] streamed) "lowered step form vs attention")

        testPropertyWithConfig config "LowerAttention: neuron and parameter counts equal the formulas; the default is never larger than the full construction" <|
            Prop.forAll arbLayer (fun l ->
                let g = attentionGraph l
                let smallest = (LowerAttention.Run(g)).Lowered.[0]
                let full = (LowerAttention.Run(g, Construction.Full)).Lowered.[0]
                let a = g.Nodes |> Seq.pick (function :? Attention as a -> Some a | _ -> None)
                full.RecurrentNeurons = a.Heads * (a.KeyWidth * a.ValueWidth + a.KeyWidth)
                && [ smallest; full ] |> List.forall (fun r -> r.RecurrentNeurons = r.FormulaNeurons && r.Parameters = r.FormulaParameters)
                && smallest.RecurrentNeurons <= full.RecurrentNeurons)

        testPropertyWithConfig config "LowerAttention: the result verifies, holds no attention, and lowering again returns the same instance" <|
            Prop.forAll arbLayer (fun l ->
                let lowered = LowerAttention.ToGatedRnn(attentionGraph l)
                hasNoAttention lowered && obj.ReferenceEquals((LowerAttention.Run(lowered)).Graph, lowered))

        testPropertyWithConfig config "LowerAttention: identity (same instance) on graphs without causal linear or gated linear attention" <|
            Prop.forAll arbArchitecture (fun arch ->
                let g = InitializeWeights.Run(build arch, 0)
                let lowerable =
                    g.Nodes |> Seq.exists (function
                        | :? Attention as a -> isNull (box (LowerAttention.Refusal a))
                        | :? GatedLinearAttention as a -> isNull (box (LowerAttention.Refusal a))
                        | _ -> false)
                not lowerable ==> lazy (obj.ReferenceEquals((LowerAttention.Run(g)).Graph, g)))

        testPropertyWithConfig { config with maxTest = 30 } "LowerAttention: a small linear transformer lowers to a pure gated RNN with the same outputs" <|
            Prop.forAll (Arb.fromGen (Gen.zip (Gen.choose (0, 100000)) (Gen.choose (1, 24)))) (fun (seed, time) ->
                let block (b: SequenceBuilder) =
                    b.Residual(fun r -> r.LayerNorm().Attention(2, 4, 4, outFeatures = Nullable 8, decay = Nullable 0.9))
                     .Residual(fun r -> r.RmsNorm().Projection(16).GELU().Projection(8))
                let g = InitializeWeights.Run(Model.Input("x", 5).Projection(8).Then(block).Then(block).Projection(3).Build(), seed)
                let lowered = LowerAttention.ToGatedRnn(g)
                let report = Equivalence.Check(g, lowered, EquivalenceOptions(Seed = seed, Lengths = [| 1; time |], Samples = 2))
                hasNoAttention lowered && report.Equivalent)

        testCase "LowerAttention: the worked d = 2 example gives exactly (1,0), (1,0), (13,4) in both forms" <| fun () ->
            let expected = array3D [ [ [ 1.; 0. ]; [ 1.; 0. ]; [ 13.; 4. ] ] ]
            for construction in [ Construction.Full; Construction.Compressed ] do
                let attention, lowered, reference = workedExample construction
                Expect.equal attention.[0] expected "attention"
                Expect.equal lowered.[0] expected (sprintf "%A gated RNN (compiled)" construction)
                Expect.equal reference.[0] expected (sprintf "%A gated RNN (reference)" construction)

        testCase "LowerAttention: square single-head counts match paper.md (98, 351, 924, 11096; compressed d = 4: 14 neurons, 666 parameters)" <| fun () ->
            for d, parameters in [ 2, 98L; 3, 351L; 4, 924L; 8, 11096L ] do
                let g = InitializeWeights.Run(Model.Input("x", d).Attention(1, d, d).Build(), 0)
                let r = (LowerAttention.Run(g, Construction.Full)).Lowered.[0]
                Expect.equal r.RecurrentNeurons (d * d + d) "N = d^2 + d"
                Expect.equal r.OutputNeurons (d * d) "M = d^2"
                Expect.equal r.Parameters parameters "2d^4 + 5d^3 + 5d^2 + 3d"
                Expect.equal r.Parameters (int64 (2 * pown d 4 + 5 * pown d 3 + 5 * pown d 2 + 3 * d)) "the polynomial"
            let g = InitializeWeights.Run(Model.Input("x", 4).Attention(1, 4, 4).Build(), 0)
            let r = (LowerAttention.Run(g, Construction.Compressed)).Lowered.[0]
            Expect.equal (r.RecurrentNeurons, r.Parameters) (14, 666L) "compressed d = 4"

        testCase "LowerAttention: softmax, non-causal and weightless attention are left alone with a diagnostic saying why" <| fun () ->
            let softmax = InitializeWeights.Run(Model.Input("x", 3).Attention(1, 2, 2, kernel = AttentionKernel.Softmax, name = "s").Build(), 0)
            let acausal = InitializeWeights.Run(Model.Input("x", 3).Attention(1, 2, 2, causal = false, name = "n").Build(), 0)
            let weightless = Model.Input("x", 3).Attention(1, 2, 2, name = "w").Build()
            for g, name, why in [ softmax, "s", "not polynomial"; acausal, "n", "future"; weightless, "w", "carries none" ] do
                let lowering = LowerAttention.Run(g)
                Expect.isTrue (obj.ReferenceEquals(lowering.Graph, g)) "same instance"
                Expect.equal lowering.Refused.[0].NodePath name "names the node"
                Expect.stringContains lowering.Refused.[0].Received why "says why"
                Expect.throwsT<GraphException> (fun () -> LowerAttention.ToGatedRnn(g) |> ignore) "strict form throws"
    ]
