/// Laws of the compiler: compiled modules agree with the reference evaluator, with the inferred
/// shapes, with their step form, with themselves under a seed, and round-trip their weights.
module Duality.Properties.LawsCompiler

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Passes
open Duality.Reference
open Duality.Properties.Support
open Duality.Testing.Sequences
open Duality.Testing.Generators

let private f64 = CompileOptions.Float64
let private f32 = CompileOptions()

/// float64 agreement: the same arithmetic in another order.
let tolerance64 = 1e-10
/// float32 agreement against the float64 reference: ~1e4 float32 roundings in the deepest generated graphs.
let tolerance32 = 2e-4

let config = { FsCheckConfig.defaultConfig with maxTest = 150; endSize = 64 }

let private run (options: CompileOptions) (c: Case) =
    let model = c.Graph.Compile(options)
    noGrad (fun () -> model.Forward(c.Inputs |> Array.map (toTensor options.DType)) |> Array.map ofTensor)

let private reference (c: Case) = ReferenceEvaluator.Evaluate(c.Graph, c.Inputs)

let private agree tolerance (options: CompileOptions) (c: Case) =
    let expected, actual = reference c, run options c
    Array.forall2 (fun e a -> within tolerance (scaledError e a) "compiled vs reference") expected actual

/// The composite form's (TorchOps) own float32 error against the float64 reference, scaled: the conditioning of the case.
let private agreementIn32 (c: Case) =
    let composite = run (CompileOptions(DType = torch.ScalarType.Float32, Execution = ExecutionMode.TorchOps)) c
    Array.map2 scaledError (reference c) composite |> Array.max

let private hasStepForm (g: Graph) = g.Nodes |> Seq.forall (function :? Attention as a -> a.Causal | _ -> true)

let private stateDict (model: Duality.Torch.CompiledGraph) =
    model.state_dict() |> Seq.map (fun kv -> kv.Key, (kv.Value.to_type(torch.ScalarType.Float64).data<double>().ToArray())) |> List.ofSeq

let tests =
    testList "compiler" [
        testPropertyWithConfig config "compiled module = reference evaluator (float64, scaled error <= 1e-10)" <|
            Prop.forAll arbCase (agree tolerance64 f64)

        // a norm over few features of a projection amplifies every float32 rounding where the features nearly coincide
        // (LayerNorm 2 after a projection to 2: the composite form's own float32 error 8.9e-5, the fused path's 3.9e-4,
        // both against the float64 reference); there the bound is 10x the composite form's own error
        testPropertyWithConfig config "compiled module = reference evaluator (float32, scaled error <= 2e-4, or within 10x the composite form's own float32 error where a norm over few features amplifies roundings past that)" <|
            Prop.forAll arbCase (fun c ->
                let own = agreementIn32 c
                agree (max tolerance32 (10.0 * own)) f32 c)

        testPropertyWithConfig { config with maxTest = 40 }
            "a forward leaves only its outputs in the caller's dispose scope: every intermediate is released when it returns (each mode, with and without gradients)" <|
            Prop.forAll arbCase (fun c ->
                let g = c.Graph
                [ for mode in [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ] do
                    for gradients in [ false; true ] do
                        let model = g.Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = mode))
                        let inputs = c.Inputs |> Array.map (toTensor torch.ScalarType.Float64)
                        use _ = if gradients then torch.enable_grad() else torch.no_grad()
                        use scope = torch.NewDisposeScope()
                        let outputs = model.Forward(inputs)
                        // outputs that are inputs themselves (an identity graph) were never the scope's
                        let made = outputs |> Array.distinct |> Array.filter (fun o -> not (Array.exists (fun i -> obj.ReferenceEquals(i, o)) inputs))
                        yield (mode, gradients), scope.DisposablesCount, made.Length ]
                |> List.forall (fun (form, left, outputs) -> left = outputs || failwithf "%A: %d tensors left, %d outputs" form left outputs))

        testPropertyWithConfig config "inferred shape = runtime shape, at every node" <|
            Prop.forAll arbCase (fun c ->
                let g = c.Graph
                let everyNode = Graph.Create(g.Nodes, Seq.init g.Nodes.Count NodeId)
                let model = everyNode.Compile(f64)
                let values = noGrad (fun () -> model.Forward(c.Inputs |> Array.map (toTensor torch.ScalarType.Float64)))
                values |> Array.mapi (fun i v -> v.shape = [| int64 c.Batch; int64 c.Time; int64 g.Widths.[i] |]) |> Array.forall id)

        testPropertyWithConfig config "step form = full-sequence form (float64, scaled error <= 1e-10)" <|
            Prop.forAll arbCase (fun c ->
                hasStepForm c.Graph ==> lazy (
                    let model = c.Graph.Compile(f64)
                    let inputs = c.Inputs |> Array.map (toTensor torch.ScalarType.Float64)
                    noGrad (fun () ->
                        let full = model.Forward(inputs) |> Array.map ofTensor
                        let streamed = model.ToStepForm().Unroll(inputs) |> Array.map ofTensor
                        Array.map2 (fun expected actual -> within tolerance64 (scaledError expected actual) "step vs full") full streamed
                        |> Array.forall id)))

        testPropertyWithConfig config "seeded compilation is reproducible; another seed gives other weights" <|
            Prop.forAll arbArchitecture (fun a ->
                let g = build a
                let first, again, other =
                    g.Compile(CompileOptions(Seed = 3)), g.Compile(CompileOptions(Seed = 3)), g.Compile(CompileOptions(Seed = 4))
                let drawn =
                    g.Nodes |> Seq.exists (function
                        | :? Projection | :? Attention -> true
                        | :? LinearRecurrence as r -> r.TrainableLambda
                        | _ -> false)
                stateDict first = stateDict again && (not drawn || stateDict first <> stateDict other))

        testPropertyWithConfig config "parameter counts from hyper-parameters = the compiled module's trainable scalars" <|
            Prop.forAll arbArchitecture (fun a ->
                let g = build a
                ParameterCounts.Total(g) = g.Compile().ParameterCount)

        testPropertyWithConfig config "weights round-trip graph -> module -> graph (float64, exactly)" <|
            Prop.forAll arbCase (fun c -> c.Graph.Compile(f64).ToGraph() = c.Graph)

        testPropertyWithConfig config "weights round-trip module -> graph -> module (float32, exactly)" <|
            Prop.forAll arbCase (fun c ->
                let model = c.Graph.Compile(f32)
                stateDict (model.ToGraph().Compile(f32)) = stateDict model)

        testPropertyWithConfig { config with maxTest = 40 } "trained weights read back into a graph compute what the trained module computes" <|
            Prop.forAll arbCase (fun c ->
                let model = c.Graph.Compile(f64)
                let inputs = c.Inputs |> Array.map (toTensor torch.ScalarType.Float64)
                let parameters = model.parameters() |> Array.ofSeq
                parameters.Length > 0 ==> lazy (
                    let optimizer = torch.optim.SGD(parameters, 1e-3)
                    for _ in 1 .. 3 do
                        optimizer.zero_grad()
                        let total = model.Forward(inputs) |> Array.map (fun y -> y.square().mean()) |> Array.reduce (fun a b -> a + b)
                        // a step from a diverging loss would only test NaN handling, which the errors laws do
                        if Double.IsFinite(total.item<double>()) && total.item<double>() < 1e6 then
                            total.backward()
                            // a finite loss may still have non-finite gradients after a large step: such a step, too, only
                            // tests NaN handling
                            if parameters |> Array.forall (fun p -> isNull p.grad || p.grad.isfinite().all().item<bool>()) then
                                optimizer.step() |> ignore
                    let trained = model.ToGraph()
                    let expected = noGrad (fun () -> model.Forward(inputs) |> Array.map ofTensor)
                    let fromGraph = ReferenceEvaluator.Evaluate(trained, c.Inputs)
                    // a step that overflowed the outputs has nothing left to compare
                    let overflowed = expected |> Array.exists (fun y -> Double.IsInfinity(maxAbs y) || Double.IsNaN(maxAbs y))
                    overflowed
                    || Array.forall2 (fun e a -> within tolerance64 (scaledError e a) "trained module vs its graph") expected fromGraph))

        testPropertyWithConfig { config with maxTest = 40 } "gradients flow to every parameter" <|
            Prop.forAll arbCase (fun c ->
                let model = c.Graph.Compile(f64)
                let inputs = c.Inputs |> Array.map (toTensor torch.ScalarType.Float64)
                model.ParameterCount > 0L ==> lazy (
                    let total = model.Forward(inputs) |> Array.map (fun y -> y.sum()) |> Array.reduce (fun a b -> a + b)
                    total.backward()
                    model.parameters() |> Seq.forall (fun p -> not (isNull p.grad) && p.grad.isfinite().all().item<bool>())))
    ]

/// Coverage (as in Minsk): every node kind has a generator, a shape rule, a module and a reference.
let coverage =
    testCase "coverage: every node kind is generated, has a shape rule, compiles and has a reference" <| fun () ->
        let samples = Gen.sampleWithSize 40 400 case
        for kind in NodeKinds.All do
            let withKind = samples |> Array.tryFind (fun c -> (kindsOf c.Graph).Contains kind.Name)
            match withKind with
            | None -> failtestf "the generator never produced a %s node" kind.Name
            | Some c ->
                let g = c.Graph
                Expect.isTrue (g.Widths.Count = g.Nodes.Count) (sprintf "%s has a shape rule" kind.Name)
                let compiled = run f64 c
                let expected = reference c
                Expect.equal compiled.Length expected.Length (sprintf "%s compiles and has a reference" kind.Name)

/// The meaning of a node kind sits in its own file (Ir/Nodes/<Kind>.cs); each of its entries is consulted once per kind.
let kinds =
    testList "node kinds" [
        testCase "coverage: every node kind has a shape rule, a parameter count, weight slots InitializeWeights fills, and a reference" <| fun () ->
            let samples = Gen.sampleWithSize 40 400 case
            for kind in NodeKinds.All do
                match samples |> Array.tryFind (fun c -> (kindsOf c.Graph).Contains kind.Name) with
                | None -> failtestf "the generator never produced a %s node" kind.Name
                | Some c ->
                    let g = c.Graph
                    let i = g.Nodes |> Seq.findIndex (fun n -> n.GetType() = kind)
                    let node = g.Nodes[i]
                    let problems = ResizeArray<Diagnostic>()
                    let widths = g.Widths |> Seq.map Nullable |> Array.ofSeq
                    let width = ShapeRules.Infer(node, NodeId i, g.Nodes, widths, problems)
                    Expect.isEmpty problems (sprintf "%s: its shape rule reports no problem (no 'unknown node kind')" kind.Name)
                    Expect.equal width (Nullable g.Widths[i]) (sprintf "%s: its shape rule gives the graph's width" kind.Name)
                    Expect.isGreaterThanOrEqual (ParameterCounts.Of node) 0L (sprintf "%s has a parameter count" kind.Name)
                    let slots = node.WeightSlots
                    Expect.equal (slots |> Seq.distinctBy (fun s -> s.Name) |> Seq.length) slots.Count
                        (sprintf "%s: slot names are distinct" kind.Name)
                    for slot in slots do
                        match slot.Value, slot.Draw with
                        | null, (:? WeightDraw.None) -> ()
                        | null, _ -> failtestf "%s: InitializeWeights left slot %s empty" kind.Name slot.Name
                        | value, _ ->
                            Expect.sequenceEqual value.Shape slot.Shape
                                (sprintf "%s: slot %s has the shape of the tensor InitializeWeights gives it" kind.Name slot.Name)
                    let alone = Graph.Create(g.Nodes, [ NodeId i ])
                    let y = (ReferenceEvaluator.Evaluate(alone, c.Inputs))[0]
                    Expect.equal (y.GetLength 0, y.GetLength 1, y.GetLength 2) (c.Batch, c.Time, g.Widths[i])
                        (sprintf "%s has a reference of the inferred shape" kind.Name)

        testCase "NodeKinds.All = the concrete node records found by reflection, each sealed and listed once" <| fun () ->
            let concrete =
                typeof<Node>.Assembly.GetTypes() |> Array.filter (fun t -> t.IsSubclassOf typeof<Node> && not t.IsAbstract)
            let names (types: Type seq) = types |> Seq.map (fun t -> t.FullName) |> set
            Expect.equal (names NodeKinds.All) (names concrete) "NodeKinds.All lists exactly the concrete Node subclasses"
            Expect.equal (Seq.length (Seq.distinct NodeKinds.All)) NodeKinds.All.Count "each kind once"
            for t in concrete do Expect.isTrue (t.IsSealed && t.IsPublic) (sprintf "%s is a public sealed record" t.Name)
    ]
