/// Laws of lowering gated linear attention: it compiles exactly into a gated RNN of the library's primitives
/// (with the Exp activation for its input gate and NormalisedReadout for mLSTM's normaliser), and raises back.
module Duality.Properties.LawsGatedLowering

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Reference
open Duality.Streaming
open Duality.Verification
open Duality.Properties.Support
open Duality.Testing.Sequences

let config = { FsCheckConfig.defaultConfig with maxTest = 60; endSize = 64 }

/// Where a generated gated linear attention's data-dependent log-decay comes from.
type LogDecay =
    | NoLogDecay
    | PerHead
    | PerKeyChannel

/// One gated linear attention over projections of an input of `Width` features.
type GatedCase =
    { Heads: int; Key: int; Value: int; Decay: LogDecay; Gammas: float list option; InputGate: bool; Normalised: bool
      Width: int; Time: int; Batch: int; Seed: int }

/// Every variant: decay none, per head or per key channel, with fixed gammas or not, with an input gate or not,
/// normalised or not.
let variants =
    [ for decay in [ NoLogDecay; PerHead; PerKeyChannel ] do
        for gammas in [ false; true ] do
            for gate in [ false; true ] do
                for normalised in [ false; true ] -> decay, gammas, gate, normalised ]

let private gatedCase =
    gen {
        let! decay, gammas, gate, normalised = Gen.elements variants
        let! heads = Gen.choose (1, 3)
        let! key = Gen.choose (1, 3)
        let! value = Gen.choose (1, 3)
        let! gammaValues = Gen.listOfLength heads (Gen.map (fun i -> float i / 100.0) (Gen.choose (50, 99)))
        let! width = Gen.choose (1, 4)
        let! time = Gen.elements [ 1; 7; 33 ]
        let! batch = Gen.choose (1, 2)
        let! seed = Gen.choose (0, 100000)
        return { Heads = heads; Key = key; Value = value; Decay = decay; Gammas = (if gammas then Some gammaValues else None)
                 InputGate = gate; Normalised = normalised; Width = width; Time = time; Batch = batch; Seed = seed }
    }

let arbGatedCase = Arb.fromGen gatedCase

/// x -> GatedLinearAttention over projections of x (the log-decay -softplus of one) -> a projection, weights drawn from the seed.
let gatedGraph (c: GatedCase) =
    let logDecay width = Func<SequenceBuilder, SequenceBuilder>(fun d -> d.Projection(width).Softplus().Scale(-1.0))
    let decay =
        match c.Decay with
        | NoLogDecay -> null
        | PerHead -> logDecay c.Heads
        | PerKeyChannel -> logDecay (c.Heads * c.Key)
    let g =
        Model.Input("x", c.Width)
            .GatedLinearAttention(c.Heads, c.Key, c.Value, (fun q -> q.Projection(c.Heads * c.Key)), (fun k -> k.Projection(c.Heads * c.Key)),
                                  (fun v -> v.Projection(c.Heads * c.Value)), decay,
                                  (if c.InputGate then Func<SequenceBuilder, SequenceBuilder>(fun i -> i.Projection(c.Heads)) else null),
                                  c.Normalised, (c.Gammas |> Option.map Array.ofList |> Option.toObj), name = "gla")
            .Projection(2, name = "after")
            .Build()
    InitializeWeights.Run(g, c.Seed)

let private f64 = torch.ScalarType.Float64

let private inputsOf (c: GatedCase) = [| randomSequence (Random(c.Seed + 1)) c.Batch c.Time c.Width 1.0 |]

let private compiled (g: Graph) (inputs: Sequence[]) =
    noGrad (fun () -> g.Compile(CompileOptions.Float64).Forward(inputs |> Array.map (toTensor f64)) |> Array.map ofTensor)

let private attentionOf (g: Graph) = g.Nodes |> Seq.pick (function :? GatedLinearAttention as a -> Some a | _ -> None)

/// The worst relative errors against the original compiled: lowered compiled, lowered reference, original reference.
let private errors (c: GatedCase) =
    let g = gatedGraph c
    let lowered = LowerAttention.ToGatedRnn(g)
    let inputs = inputsOf c
    let expected = (compiled g inputs).[0]
    relativeError expected (compiled lowered inputs).[0],
    relativeError expected (ReferenceEvaluator.Evaluate(lowered, inputs)).[0],
    relativeError expected (ReferenceEvaluator.Evaluate(g, inputs)).[0]

let private inputGradient (g: Graph) (c: GatedCase) =
    let x = (toTensor f64 (inputsOf c).[0]).requires_grad_(true)
    let y = g.Compile(CompileOptions.Float64).forward(x)
    let probe = torch.linspace(-1.0, 1.0, y.numel(), dtype = f64).reshape(y.shape)
    backwardOf (fun () -> (y * probe).sum())
    ofTensor x.grad

let private throwsNaming (field: string) (build: unit -> Graph) =
    try
        build () |> ignore
        failtestf "no exception; expected a GraphException naming %s" field
    with :? GraphException as e -> Expect.stringContains e.Message field "the message names the field"

let tests =
    testList "gatedLowering" [
        testPropertyWithConfig config "LowerAttention: a gated linear attention's lowered graph computes it (float64, relative error < 1e-10), compiled and in the reference" <|
            Prop.forAll arbGatedCase (fun c ->
                let lowered, reference, original = errors c
                within 1e-10 lowered "lowered, compiled" && within 1e-10 reference "lowered, reference" && within 1e-10 original "attention, reference")

        testCase "LowerAttention: every gated variant at T = 1, 7, 33 (decay none, per head, per key channel; gammas; input gate; normaliser): outputs < 1e-10, gradients < 1e-8" <| fun () ->
            let random = Random(7)
            let mutable worst, worstGradient = 0.0, 0.0
            for decay, gammas, gate, normalised in variants do
                for time in [ 1; 7; 33 ] do
                    let heads, key, value = random.Next(1, 4), random.Next(1, 4), random.Next(1, 4)
                    let c = { Heads = heads; Key = key; Value = value; Decay = decay
                              Gammas = (if gammas then Some [ for _ in 1 .. heads -> 0.5 + 0.49 * random.NextDouble() ] else None)
                              InputGate = gate; Normalised = normalised; Width = random.Next(1, 5); Time = time; Batch = 2; Seed = random.Next() }
                    let g = gatedGraph c
                    let report = Equivalence.Check(g, LowerAttention.ToGatedRnn(g), EquivalenceOptions(Lengths = [| time |], Samples = 2, Seed = c.Seed, Tolerance = 1e-10))
                    if not report.Equivalent then failtestf "%A: %O" c report
                    let lowered, reference, _ = errors c
                    within 1e-10 (max lowered reference) (sprintf "%A" c) |> ignore
                    worst <- List.max [ worst; report.MaxRelativeError; lowered; reference ]
                    let gradient = relativeError (inputGradient g c) (inputGradient (LowerAttention.ToGatedRnn(g)) c)
                    within 1e-8 gradient (sprintf "gradients %A" c) |> ignore
                    worstGradient <- max worstGradient gradient
            printfn "gated lowering over every variant: worst relative error %.2e (outputs), %.2e (input gradients)" worst worstGradient

        testPropertyWithConfig config "LowerAttention: gradients with respect to the input are preserved through a gated linear attention's lowering (float64, < 1e-8)" <|
            Prop.forAll arbGatedCase (fun c ->
                let g = gatedGraph c
                within 1e-8 (relativeError (inputGradient g c) (inputGradient (LowerAttention.ToGatedRnn(g)) c)) "input gradients")

        testPropertyWithConfig config "LowerAttention: the lowered gated attention's step form and streamer = the attention (float64, < 1e-10)" <|
            Prop.forAll arbGatedCase (fun c ->
                let g = gatedGraph c
                let lowered = LowerAttention.ToGatedRnn(g)
                let inputs = inputsOf c
                let expected = (compiled g inputs).[0]
                let stepped = noGrad (fun () -> lowered.Compile(CompileOptions.Float64).ToStepForm().Unroll(toTensor f64 inputs.[0]) |> ofTensor)
                let streamed = (LawsStreaming.stream64 (Streamer.Create<float>(lowered, c.Batch)) lowered inputs).[0]
                within 1e-10 (relativeError expected stepped) "step form" && within 1e-10 (relativeError expected streamed) "streamer")

        testPropertyWithConfig config "LowerAttention: a gated attention's report counts H (d_k d_v + d_k) neurons (+ H d_k normalised), and its parameters equal the formula" <|
            Prop.forAll arbGatedCase (fun c ->
                let lowering = LowerAttention.Run(gatedGraph c, Construction.Compressed)
                let r = lowering.Lowered.[0]
                let neurons = c.Heads * (c.Key * c.Value + c.Key) + (if c.Normalised then c.Heads * c.Key else 0)
                lowering.Refused.Count = 0 && r.Node = "gla" && r.Construction = Construction.Full
                && r.RecurrentNeurons = neurons && r.FormulaNeurons = neurons
                && r.OutputNeurons = c.Heads * c.Key * (c.Value + (if c.Normalised then 1 else 0))
                && r.Parameters = r.FormulaParameters && Seq.last r.NewNodes = "gla")

        testPropertyWithConfig config "LowerAttention: the lowered gated attention holds only primitives, verifies, and lowering again returns the same instance" <|
            Prop.forAll arbGatedCase (fun c ->
                let lowered = LowerAttention.ToGatedRnn(gatedGraph c)
                lowered.Nodes |> Seq.forall (fun n -> not (n :? GatedLinearAttention || n :? Attention))
                && obj.ReferenceEquals((LowerAttention.Run(lowered)).Graph, lowered))

        testCase "LowerAttention: a gated attention too large for one weight tensor is refused, naming why" <| fun () ->
            let g = Model.Input("x", 2).GatedLinearAttention(4, 200, 200, (fun q -> q.Projection(800)), (fun k -> k.Projection(800)),
                                                             (fun v -> v.Projection(800)), name = "big").Build()
            let lowering = LowerAttention.Run(g)
            Expect.isTrue (obj.ReferenceEquals(lowering.Graph, g)) "left as it is"
            Expect.equal (lowering.Refused |> Seq.map (fun d -> d.NodePath) |> List.ofSeq) [ "big" ] "refused, naming the node"
            Expect.stringContains (string lowering.Refused.[0]) "2^31 - 1" "says why"

        testPropertyWithConfig config "RaiseAttention: raising a lowered gated linear attention gives back the original graph (equal records)" <|
            Prop.forAll arbGatedCase (fun c ->
                let g = gatedGraph c
                let raising = RaiseAttention.Run(LowerAttention.ToGatedRnn(g))
                raising.Refused.Count = 0 && raising.Raised.Count = 1 && raising.Raised.[0].Node = "gla"
                && (if raising.Graph = g then true else failwithf "raised:\n%O\noriginal:\n%O" raising.Graph g))

        testCase "LowerAttention then RaiseAttention: two stacked gated attentions (one reading the other) come back equal" <| fun () ->
            let logDecay width = Func<SequenceBuilder, SequenceBuilder>(fun d -> d.Projection(width).Softplus().Scale(-1.0))
            let g =
                InitializeWeights.Run(
                    Model.Input("x", 3)
                        .GatedLinearAttention(2, 2, 3, (fun q -> q.Projection(4)), (fun k -> k.Projection(4)), (fun v -> v.Projection(6)),
                                              logDecay 4, (fun i -> i.Projection(2)), true, name = "first")
                        .GatedLinearAttention(3, 1, 2, (fun q -> q.Projection(3)), (fun k -> k.Projection(3)), (fun v -> v.Projection(6)),
                                              logDecay 3, null, false, [| 0.9; 0.95; 0.99 |], name = "second")
                        .Build(), 5)
            let lowered = LowerAttention.ToGatedRnn(g)
            Expect.equal (LowerAttention.Run(g)).Lowered.Count 2 "both lowered"
            let raising = RaiseAttention.Run(lowered)
            Expect.equal (raising.Raised |> Seq.map (fun r -> r.Node) |> List.ofSeq) [ "first"; "second" ] "both raised, in graph order"
            Expect.equal raising.Graph g "the original graph"
            let report = Equivalence.Check(g, lowered, EquivalenceOptions(Lengths = [| 1; 7; 33 |], Samples = 2))
            Expect.isTrue report.Equivalent (string report)

        testPropertyWithConfig config "RaiseAttention: a lowered gated attention with one selection weight changed is not raised" <|
            Prop.forAll (Arb.fromGen (Gen.zip gatedCase (Gen.elements [ "gla/input_key"; "gla/input_value"; "gla/output_query"; "gla/output_value"; "gla/readout" ]))) (fun (c, part) ->
                let lowered = LowerAttention.ToGatedRnn(gatedGraph c)
                let name = if part = "gla/readout" then (if c.Normalised then "gla/values" else "gla") else part
                let id = lowered.IdOf name
                let p = lowered.[id] :?> Projection
                let w = p.Weights.Weight
                let changed = DoubleTensor.FromShape(Array.ofSeq w.Shape, w.Data |> Seq.mapi (fun i x -> if i = 0 then x + 0.5 else x) |> Array.ofSeq)
                let edited = lowered.WithNode(id, Projection(p.Name, p.Source, p.InFeatures, p.OutFeatures, p.Bias, ProjectionWeights(changed, p.Weights.Bias)))
                (RaiseAttention.Run(edited)).Graph.Nodes |> Seq.forall (fun n -> not (n :? GatedLinearAttention)))

        testCase "NormalisedReadout: reference = module (TorchOps and Auto) = step form = streamer (float64)" <| fun () ->
            for heads, channels, time in [ 1, 1, 1; 2, 3, 7; 3, 2, 33 ] do
                let g = InitializeWeights.Run(Model.Input("x", heads * channels).NormalisedReadout(heads, (fun n -> n.Projection(heads)), name = "r").Build(), heads)
                let inputs = [| randomSequence (Random(time)) 2 time (heads * channels) 3.0 |]
                let expected = (ReferenceEvaluator.Evaluate(g, inputs)).[0]
                for execution in [ ExecutionMode.TorchOps; ExecutionMode.Auto ] do
                    let y = noGrad (fun () -> g.Compile(CompileOptions(DType = f64, Execution = execution)).Forward(inputs |> Array.map (toTensor f64)).[0] |> ofTensor)
                    within 1e-14 (relativeError expected y) (sprintf "module %A" execution) |> ignore
                let stepped = noGrad (fun () -> g.Compile(CompileOptions.Float64).ToStepForm().Unroll(toTensor f64 inputs.[0]) |> ofTensor)
                let streamed = (LawsStreaming.stream64 (Streamer.Create<float>(g, 2)) g inputs).[0]
                within 1e-14 (relativeError expected stepped) "step form" |> ignore
                within 1e-14 (relativeError expected streamed) "streamer" |> ignore
                // both sides of max(|n|, 1) are exercised
                let readout = g.Nodes |> Seq.pick (function :? NormalisedReadout as r -> Some r | _ -> None)
                let n = (ReferenceEvaluator.Evaluate(Graph.Create(g.Nodes, [ readout.Normaliser ]), inputs)).[0]
                if heads > 1 then Expect.isTrue (n |> Seq.cast<double> |> Seq.exists (fun v -> abs v > 1.0)) "some |n| > 1"

        testCase "NormalisedReadout: its errors name the field (Value, Normaliser, heads)" <| fun () ->
            throwsNaming "Normaliser" (fun () -> Model.Input("x", 4).NormalisedReadout(2, (fun n -> n.Projection(3))).Build())
            throwsNaming "Value" (fun () -> Model.Input("x", 5).NormalisedReadout(2, (fun n -> n.Projection(2))).Build())
            throwsNaming "heads" (fun () -> Model.Input("x", 4).NormalisedReadout(0, (fun n -> n.Projection(1))).Build())

        testCase "ActivationKind.Exp: reference = torch (TorchOps and Auto) = streamer (float64)" <| fun () ->
            let g = Model.Input("x", 5).Exp().Build()
            let inputs = [| randomSequence (Random(3)) 2 9 5 3.0 |]
            let expected = (ReferenceEvaluator.Evaluate(g, inputs)).[0]
            Expect.equal expected.[0, 0, 0] (exp inputs.[0].[0, 0, 0]) "the reference is e^x"
            for execution in [ ExecutionMode.TorchOps; ExecutionMode.Auto ] do
                let y = noGrad (fun () -> g.Compile(CompileOptions(DType = f64, Execution = execution)).Forward(inputs |> Array.map (toTensor f64)).[0] |> ofTensor)
                within 1e-15 (relativeError expected y) (sprintf "torch %A" execution) |> ignore
            let streamed = (LawsStreaming.stream64 (Streamer.Create<float>(g, 2)) g inputs).[0]
            within 1e-15 (relativeError expected streamed) "streamer" |> ignore
    ]
