/// Laws of errors: ill-formed graphs and bad runtime input raise the library's exception, naming
/// the node and giving a hint; never a native error, a NullReferenceException or a wrong answer.
module Duality.Properties.LawsErrors

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Testing.Sequences
open Duality.Testing.Generators

/// One fault injected into an otherwise well-formed graph, and the node it must be blamed on.
type Fault =
    | WrongProjectionInput
    | GateWidths
    | SliceOutOfRange
    | NaNWeight
    | WeightShape
    | NegativeSize
    | DuplicateName
    | ForwardReference
    | FixedLambdaWithoutValues
    | SoftmaxWithFeatureMap
    | DecayWithoutCausality
    | ComplexWithDecayBranch
    | ResidualWidths
    | PhaseWithoutGamma
    | InputDependentDecayOnSoftmax

/// (graph nodes, outputs, the name the diagnostic must carry)
let faulty (a: Architecture) fault : Node list * NodeId list * string =
    let g = build a
    let nodes = List.ofSeq g.Nodes
    let last = NodeId(nodes.Length - 1)
    let w = g.WidthOf last
    let append node = nodes @ [ node ], [ NodeId nodes.Length ], (node: Node).Name
    match fault with
    | WrongProjectionInput -> append (Projection("bad/proj", last, w + 1, 3))
    | GateWidths ->
        let p = Projection("bad/p", last, w, w + 2)
        nodes @ [ p; Gate("bad/gate", last, NodeId nodes.Length) ], [ NodeId(nodes.Length + 1) ], "bad/gate"
    | SliceOutOfRange -> append (Slice("bad/slice", last, w, 1))
    | NaNWeight ->
        let weights = ProjectionWeights(DoubleTensor.FromShape([| 2; w |], Array.init (2 * w) (fun i -> if i = 0 then nan else 1.0)), null)
        append (Projection("bad/nan", last, w, 2, false, weights))
    | WeightShape ->
        let weights = ProjectionWeights(DoubleTensor.FromShape([| w + 1; 2 |], Array.zeroCreate (2 * w + 2)), null)
        append (Projection("bad/shape", last, w, 2, false, weights))
    | NegativeSize -> append (Projection("bad/negative", last, w, -1))
    | DuplicateName -> nodes @ [ Scale("bad/dup", last, 2.0); Scale("bad/dup", NodeId nodes.Length, 2.0) ], [ NodeId(nodes.Length + 1) ], "bad/dup"
    | ForwardReference -> append (Add("bad/forward", last, NodeId(nodes.Length + 5)))
    | FixedLambdaWithoutValues -> append (LinearRecurrence("bad/fixed", last, w, TrainableLambda = false))
    | SoftmaxWithFeatureMap ->
        append (Attention("bad/softmax", last, w, 1, 2, 2, Kernel = AttentionKernel.Softmax, FeatureMap = ActivationKind.EluPlusOne))
    | DecayWithoutCausality -> append (Attention("bad/acausal", last, w, 1, 2, 2, Causal = false, Decay = Nullable 0.9))
    | ComplexWithDecayBranch ->
        append (LinearRecurrence("bad/complex", last, w, State = StateKind.Complex, TrainableLambda = false, Decay = Nullable last))
    | PhaseWithoutGamma -> append (Attention("bad/phase", last, w, 1, 2, 2, DecayPhase = Nullable 0.5))
    | InputDependentDecayOnSoftmax ->
        append (Attention("bad/gated", last, w, 1, 2, 2, Kernel = AttentionKernel.Softmax, InputDependentDecay = true))
    | ResidualWidths ->
        let p = Projection("bad/p", last, w, w + 1)
        nodes @ [ p; Add("bad/residual", last, NodeId nodes.Length) ], [ NodeId(nodes.Length + 1) ], "bad/residual"

let allFaults =
    [ WrongProjectionInput; GateWidths; SliceOutOfRange; NaNWeight; WeightShape; NegativeSize; DuplicateName
      ForwardReference; FixedLambdaWithoutValues; SoftmaxWithFeatureMap; DecayWithoutCausality; ComplexWithDecayBranch
      ResidualWidths; PhaseWithoutGamma; InputDependentDecayOnSoftmax ]

let private raisesNaming (name: string) (f: unit -> 'a) =
    try
        f () |> ignore
        failwithf "no exception; expected a GraphException naming '%s'" name
    with
    | :? GraphException as e ->
        let named = e.Diagnostics |> Seq.exists (fun d -> d.NodePath = name && d.Hint.Length > 0)
        if not named then failwithf "the GraphException does not name '%s':\n%s" name e.Message
        true

let config = { FsCheckConfig.defaultConfig with maxTest = 200; endSize = 48 }

let private f64 = CompileOptions.Float64

let tests =
    testList "errors" [
        testPropertyWithConfig config "ill-formed graphs raise a GraphException that names the faulty node and hints a fix" <|
            Prop.forAll (Arb.fromGen (Gen.zip architecture (Gen.elements allFaults))) (fun (a, fault) ->
                let nodes, outputs, name = faulty a fault
                raisesNaming name (fun () -> Graph.Create(nodes, outputs)))

        testPropertyWithConfig config "inputs of the wrong width, rank or dtype raise a GraphException naming the input" <|
            Prop.forAll arbCase (fun c ->
                let model = c.Graph.Compile(f64)
                let good = c.Inputs |> Array.map (Duality.Testing.Sequences.toTensor torch.ScalarType.Float64)
                let first = c.Graph.InputNodes |> Seq.head
                let wider = Array.copy good
                wider.[0] <- torch.zeros(int64 c.Batch, int64 c.Time, int64 (first.Features + 1), dtype = torch.ScalarType.Float64)
                let flat = Array.copy good
                flat.[0] <- torch.zeros(int64 c.Batch, int64 first.Features, dtype = torch.ScalarType.Float64)
                let single = Array.copy good
                single.[0] <- good.[0].to_type(torch.ScalarType.Float32)
                raisesNaming first.Name (fun () -> model.Forward(wider))
                && raisesNaming first.Name (fun () -> model.Forward(flat))
                && raisesNaming first.Name (fun () -> model.Forward(single)))

        testCase "the message names the node, both shapes, the source and a hint" <| fun () ->
            let message =
                try
                    Model.Input("x", 64)
                        .Scope("block2", fun b -> b.Projection(96).Sigmoid(name = "gate").Projection(128, name = "proj", inFeatures = Nullable 64))
                        .Build() |> ignore
                    ""
                with :? GraphException as e -> e.Message
            let expected =
                "1 problem in the graph:\n"
                + "shape mismatch at 'block2/proj' (Projection 64 -> 128)\n"
                + "  expected input [batch, time, 64]\n"
                + "  received       [batch, time, 96] from 'block2/gate'\n"
                + "  hint: declare the projection with 96 inputs, or project to 64 first"
            Expect.equal message expected "message"

        testCase "null fields are reported as missing, not as a NullReferenceException" <| fun () ->
            try
                Graph.Create([ Input("x", 2) :> Node; Concat("c", null) :> Node; Projection("p", NodeId 0, 2, 2, true, ProjectionWeights(null, null)) :> Node ],
                             [ NodeId 2 ]) |> ignore
                failtest "no exception"
            with :? GraphException as e ->
                Expect.equal (e.Diagnostics |> Seq.map (fun d -> d.NodePath) |> Seq.distinct |> List.ofSeq) [ "c"; "p" ] "both nodes named"

        testCase "two problems, two diagnostics" <| fun () ->
            try
                Model.Input("x", 4).Slice(2, 5).From("x").Projection(3, inFeatures = Nullable 5, name = "p").Build() |> ignore
                failtest "no exception"
            with :? GraphException as e ->
                Expect.equal (e.Diagnostics |> Seq.map (fun d -> d.NodePath) |> List.ofSeq) [ "slice"; "p" ] "both nodes"

        testCase "referring to an unknown node names it and lists the known ones" <| fun () ->
            try
                Model.Input("x", 4).From("nowhere") |> ignore
                failtest "no exception"
            with :? GraphException as e ->
                Expect.stringContains e.Message "nowhere" "names the node"
                Expect.stringContains e.Message "x" "lists known nodes"

        testCase "the reference evaluator refuses a graph without weights, naming the nodes" <| fun () ->
            let g = Model.Input("x", 2).Projection(3, name = "p").Build()
            try
                Duality.Reference.ReferenceEvaluator.Evaluate(g, [| Array3D.zeroCreate 1 1 2 |]) |> ignore
                failtest "no exception"
            with :? GraphException as e -> Expect.equal e.Diagnostics.[0].NodePath "p" "names p"

        testCase "non-causal attention has no step form, and says so" <| fun () ->
            let g = Model.Input("x", 2).Attention(1, 2, 2, causal = false, name = "acausal").Build()
            try
                g.Compile().ToStepForm() |> ignore
                failtest "no exception"
            with :? GraphException as e -> Expect.equal e.Diagnostics.[0].NodePath "acausal" "names the attention"

        testCase "a step with the wrong batch size is refused" <| fun () ->
            let g = Model.Input("x", 2).LinearRecurrence().Build()
            let stepper = g.Compile().ToStepForm()
            let state = stepper.InitialState(3L)
            Expect.throwsT<GraphException> (fun () -> stepper.Step(torch.zeros(2L, 2L), state) |> ignore) "batch 2 into a state of 3"
    ]
