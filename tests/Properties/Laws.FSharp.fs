/// Laws of the F# surface: one core with the C# builders, computation expressions, patterns, and
/// the property kit users get.
module Duality.Properties.LawsFSharp

open System
open System.Reflection
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
    | Recurrence(ComplexInput normalised) ->
        s |> Layer.projection (2 * w)
          |> Layer.recurrenceWith { Recurrences.create with Width = Some w; State = StateKind.Complex; Readout = ComplexReadout.RealAndImaginary
                                                            ComplexInput = true; NormalisedInput = normalised }
    | Recurrence(LogDecay shared) ->
        let logDecay = Layer.projection w >> Layer.softplus >> Layer.scale -1.0
        s |> Layer.gateBy logDecay ActivationKind.DecayNormaliser
          |> Layer.recurrence (Lambda.LogDecay(Layer.projection (if shared then 1 else w) >> Layer.softplus >> Layer.scale -1.0))
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
    | ChannelScaleOp -> s |> Layer.channelScaleWith -2.0 2.0 None None
    | GroupNormOp(groups, centre) -> s |> Layer.groupNormWith groups 1e-5 true centre None None
    | GatedAttentionOf g ->
        let logDecay width = Layer.projection width >> Layer.softplus >> Layer.scale -1.0
        let decay, gammas =
            match g.GDecay with
            | Undecayed -> None, None
            | DecayPerHead -> Some(logDecay g.GHeads), None
            | DecayPerKeyChannel -> Some(logDecay (g.GHeads * g.GKey)), None
            | FixedAndPerHead gammas -> Some(logDecay g.GHeads), Some gammas
        s |> Layer.gatedLinearAttention
                 { GatedAttention.create g.GHeads g.GKey g.GValue (Layer.projection (g.GHeads * g.GKey)) (Layer.projection (g.GHeads * g.GKey))
                                         (Layer.projection (g.GHeads * g.GValue)) with
                     LogDecay = decay; HeadDecays = gammas; Normalised = g.Normalised
                     LogInputGate = if g.InputGate then Some(Layer.projection g.GHeads >> Layer.tanh >> Layer.scale 4.0) else None }
    | RotaryOp(heads, None) -> s |> Layer.rotary heads
    | RotaryOp(heads, Some angles) -> s |> Layer.rotaryWith heads (Some(Array.ofList angles)) None
    | NormalisedReadoutOf heads -> s |> Layer.normalisedReadout heads (Layer.projection heads)
    | MarkOutput -> s |> Layer.output

let buildFSharp (a: Architecture) =
    let start =
        match a.Second with
        | None -> Model.input "x" a.Input
        | Some k -> Model.input "x" a.Input |> Layer.input "context" k |> Layer.concatWith [ "x" ]
    a.Ops |> List.fold applyFSharp start |> Layer.output |> Model.build

/// Where the F# surface covers a C# builder method or parameter.
type Cover =
    /// A function of an F# module: `Fn("Layer", "projectionWith")`.
    | Fn of fsModule: string * name: string
    /// A field of an F# record: `Field("AttentionSpec", "Weights")`.
    | Field of record: string * field: string
    /// A case of an F# union: `Case("Decay", "Gamma")`.
    | Case of union: string * case: string
    /// F# itself, with why: `Then` is function application.
    | Language of why: string

/// Every C# builder method, by name and parameter names, with the F# function covering it and the F#
/// function, field or case covering each parameter.
let parity : (string * Cover * (string * Cover) list) list =
    let named = Fn("Layer", "named")
    let spec record fields = fields |> List.map (fun (p, f) -> p, Field(record, f))
    [ "Model.Input(name,features)", Fn("Model", "input"), [ "name", Fn("Model", "input"); "features", Fn("Model", "input") ]
      "Input(name,features)", Fn("Layer", "input"), [ "name", Fn("Layer", "input"); "features", Fn("Layer", "input") ]
      "Projection(outFeatures,bias,name,weights,inFeatures)", Fn("Layer", "projectionWith"),
        spec "ProjectionSpec" [ "outFeatures", "Out"; "bias", "Bias"; "name", "Name"; "weights", "Weights"; "inFeatures", "In" ]
      "Gate(value,gate,activation,name)", Fn("Layer", "gate"),
        [ "value", Fn("Layer", "gate"); "gate", Fn("Layer", "gate"); "activation", Fn("Layer", "gate"); "name", Fn("Layer", "gateNamed") ]
      "Gate(gate,activation,name)", Fn("Layer", "gateBy"),
        [ "gate", Fn("Layer", "gateBy"); "activation", Fn("Layer", "gateBy"); "name", Fn("Layer", "gateByNamed") ]
      "LinearRecurrence(width,trainable,lambda,state,readout,initialState,decay,name,decayForm,complexInput,normalisedInput)", Fn("Layer", "recurrenceWith"),
        spec "RecurrenceSpec" [ "width", "Width"; "trainable", "Trainable"; "lambda", "Lambda"; "state", "State"; "readout", "Readout"
                                "initialState", "InitialState"; "decay", "Decay"; "name", "Name"; "decayForm", "DecayForm"
                                "complexInput", "ComplexInput"; "normalisedInput", "NormalisedInput" ]
      "LinearRecurrence(fixedLambda,name)", Case("Lambda", "Fixed"), [ "fixedLambda", Case("Lambda", "Fixed"); "name", named ]
      "Attention(heads,keyWidth,valueWidth,outFeatures,causal,kernel,featureMap,decay,weights,name,decayPhase,inputDependentDecay,headDecays)",
        Fn("Layer", "attention"),
        spec "AttentionSpec" [ "heads", "Heads"; "keyWidth", "KeyWidth"; "valueWidth", "ValueWidth"; "outFeatures", "Out"; "causal", "Causal"
                               "kernel", "Kernel"; "featureMap", "FeatureMap"; "weights", "Weights"; "name", "Name" ]
        @ [ "decay", Case("Decay", "Gamma"); "decayPhase", Case("Decay", "Rotating"); "inputDependentDecay", Case("Decay", "Gated"); "headDecays", Case("Decay", "PerHead") ]
      "Activation(kind,name)", Fn("Layer", "activation"), [ "kind", Fn("Layer", "activation"); "name", named ]
      "Sigmoid(name)", Fn("Layer", "sigmoid"), [ "name", named ]
      "SiLU(name)", Fn("Layer", "silu"), [ "name", named ]
      "Softplus(name)", Fn("Layer", "softplus"), [ "name", named ]
      "LogSigmoid(name)", Fn("Layer", "logSigmoid"), [ "name", named ]
      "LogSoftplus(name)", Fn("Layer", "logSoftplus"), [ "name", named ]
      "Exp(name)", Fn("Layer", "exp"), [ "name", named ]
      "GELU(name)", Fn("Layer", "gelu"), [ "name", named ]
      "Tanh(name)", Fn("Layer", "tanh"), [ "name", named ]
      "ReLU(name)", Fn("Layer", "relu"), [ "name", named ]
      "Residual(body,name)", Fn("Layer", "residual"), [ "body", Fn("Layer", "residual"); "name", Fn("Layer", "residualNamed") ]
      "Add(other:String,name)", Fn("Layer", "add"), [ "other", Fn("Layer", "add"); "name", named ]
      "Add(other:Func`2,name)", Fn("Layer", "addBranch"), [ "other", Fn("Layer", "addBranch"); "name", Fn("Layer", "addBranchNamed") ]
      "Concat(branches)", Fn("Layer", "concat"), [ "branches", Fn("Layer", "concat") ]
      "Concat(name,branches)", Fn("Layer", "concatNamed"), [ "name", Fn("Layer", "concatNamed"); "branches", Fn("Layer", "concatNamed") ]
      "ConcatWith(others)", Fn("Layer", "concatWith"), [ "others", Fn("Layer", "concatWith") ]
      "Slice(start,length,name)", Fn("Layer", "slice"), [ "start", Fn("Layer", "slice"); "length", Fn("Layer", "slice"); "name", named ]
      "LayerNorm(epsilon,affine,name,weights)", Fn("Layer", "layerNormWith"),
        spec "NormSpec" [ "epsilon", "Epsilon"; "affine", "Affine"; "name", "Name"; "weights", "Weights" ]
      "RmsNorm(epsilon,affine,name,weights)", Fn("Layer", "rmsNormWith"),
        spec "NormSpec" [ "epsilon", "Epsilon"; "affine", "Affine"; "name", "Name"; "weights", "Weights" ]
      "Scale(factor,name)", Fn("Layer", "scale"), [ "factor", Fn("Layer", "scale"); "name", named ]
      "Scope(name,body)", Fn("Layer", "scope"), [ "name", Fn("Layer", "scope"); "body", Fn("Layer", "scope") ]
      "From(name)", Fn("Layer", "from"), [ "name", Fn("Layer", "from") ]
      "Then(layers)", Language "a piece of architecture is a function: `s |> layers`", [ "layers", Language "the function applied" ]
      "Named(name)", Fn("Layer", "named"), [ "name", Fn("Layer", "named") ]
      "Output()", Fn("Layer", "output"), []
      "Build()", Fn("Model", "build"), []
      "GroupNorm(groups,epsilon,affine,centre,name,weights)", Fn("Layer", "groupNormWith"),
        [ for p in [ "groups"; "epsilon"; "affine"; "centre"; "name"; "weights" ] -> p, Fn("Layer", "groupNormWith") ]
      "ChannelScale(initialLow,initialHigh,name,factors)", Fn("Layer", "channelScaleWith"),
        [ "initialLow", Fn("Layer", "channelScaleWith"); "initialHigh", Fn("Layer", "channelScaleWith")
          "name", Fn("Layer", "channelScaleWith"); "factors", Fn("Layer", "channelScaleWith") ]
      "GatedLinearAttention(heads,keyWidth,valueWidth,query,key,value,logDecay,logInputGate,normalised,headDecays,name)",
        Fn("Layer", "gatedLinearAttention"),
        spec "GatedAttentionSpec" [ "heads", "Heads"; "keyWidth", "KeyWidth"; "valueWidth", "ValueWidth"; "query", "Query"; "key", "Key"
                                    "value", "Value"; "logDecay", "LogDecay"; "logInputGate", "LogInputGate"; "normalised", "Normalised"
                                    "headDecays", "HeadDecays"; "name", "Name" ]
      "NormalisedReadout(heads,normaliser,name)", Fn("Layer", "normalisedReadout"),
        [ "heads", Fn("Layer", "normalisedReadout"); "normaliser", Fn("Layer", "normalisedReadout"); "name", Fn("Layer", "normalisedReadoutNamed") ]
      "CausalConv1d(kernelSize,bias,name,weights)", Fn("Layer", "causalConv1dWith"),
        [ "kernelSize", Fn("Layer", "causalConv1dWith"); "bias", Fn("Layer", "causalConv1dWith")
          "name", Fn("Layer", "causalConv1dWith"); "weights", Fn("Layer", "causalConv1dWith") ]
      "Rotary(heads,angles,name)", Fn("Layer", "rotaryWith"),
        [ "heads", Fn("Layer", "rotaryWith"); "angles", Fn("Layer", "rotaryWith"); "name", Fn("Layer", "rotaryWith") ] ]

/// The C# builder surface by reflection: `SequenceBuilder`'s public methods, `Model`'s, and every public
/// extension method on `SequenceBuilder` in the Duality.Dsl assembly (its `this` parameter left out).
/// Overloads that share parameter names are told apart by the first parameter's type.
let csharpBuilders () : (string * string list) list =
    let flags = BindingFlags.Public ||| BindingFlags.DeclaredOnly
    let key prefix (m: MethodInfo) (ps: ParameterInfo list) =
        let ambiguous =
            m.DeclaringType.GetMethods(flags ||| BindingFlags.Instance ||| BindingFlags.Static)
            |> Array.filter (fun o -> o.Name = m.Name && (o.GetParameters() |> Array.map (fun p -> p.Name)) = (m.GetParameters() |> Array.map (fun p -> p.Name)))
            |> Array.length > 1
        let names =
            ps |> List.mapi (fun i p -> if ambiguous && i = 0 then sprintf "%s:%s" p.Name p.ParameterType.Name else p.Name)
        sprintf "%s%s(%s)" prefix m.Name (String.Join(",", names)), ps |> List.map (fun p -> p.Name)
    let own =
        typeof<Duality.Builders.SequenceBuilder>.GetMethods(flags ||| BindingFlags.Instance)
        |> Array.filter (fun m -> not m.IsSpecialName)
        |> Array.map (fun m -> key "" m (List.ofArray (m.GetParameters())))
    let model =
        typeof<Duality.Builders.Model>.GetMethods(flags ||| BindingFlags.Static)
        |> Array.map (fun m -> key "Model." m (List.ofArray (m.GetParameters())))
    let extensions =
        typeof<Duality.Builders.SequenceBuilder>.Assembly.GetExportedTypes()
        |> Array.collect (fun t -> t.GetMethods(flags ||| BindingFlags.Static))
        |> Array.filter (fun m ->
            m.IsDefined(typeof<System.Runtime.CompilerServices.ExtensionAttribute>, false)
            && m.GetParameters().Length > 0 && m.GetParameters().[0].ParameterType = typeof<Duality.Builders.SequenceBuilder>)
        |> Array.map (fun m -> key "" m (m.GetParameters() |> List.ofArray |> List.tail))
    Array.concat [ model; own; extensions ] |> List.ofArray

/// Whether the F# function, field or case a cover names exists in Duality.FSharp.
let coverExists cover =
    let fsharp = typeof<Duality.FSharp.ProjectionSpec>.Assembly
    let typeNamed name =
        [ name; name + "Module" ] |> List.tryPick (fun n -> Option.ofObj (fsharp.GetType("Duality.FSharp." + n)))
    let flags = BindingFlags.Public ||| BindingFlags.Static ||| BindingFlags.Instance
    match cover with
    | Fn(m, name) | Field(m, name) -> typeNamed m |> Option.exists (fun t -> t.GetMember(name, flags).Length > 0)
    | Case(u, case) ->
        typeNamed u |> Option.exists (fun t ->
            FSharp.Reflection.FSharpType.IsUnion t
            && FSharp.Reflection.FSharpType.GetUnionCases t |> Array.exists (fun c -> c.Name = case))
    | Language _ -> true

/// The worked example of the README: d = 2, two heads of key and value width 1, an output projection.
let readmeAttentionWeights () =
    AttentionWeights(
        Query = DoubleTensor.Matrix(array2D [ [ 1.0; 0.0 ]      // head 0: q0 = x0
                                              [ 0.0; 1.0 ] ]),   // head 1: q1 = x1
        Key = DoubleTensor.Matrix(array2D [ [ 1.0; 1.0 ]        // head 0: k0 = x0 + x1
                                            [ 0.0; 2.0 ] ]),     // head 1: k1 = 2 x1
        Value = DoubleTensor.Matrix(array2D [ [ 0.5; 0.0 ]
                                              [ 0.0; -1.0 ] ]),
        Output = DoubleTensor.Matrix(array2D [ [ 1.0; 0.0 ]     // y0 = head 0's value
                                               [ 1.0; 1.0 ] ]))  // y1 = the sum of both heads

let private tensor (shape: int[]) = DoubleTensor.FromShape(shape, Array.init (Array.fold (*) 1 shape) (fun i -> 0.1 * float (i + 1)))

/// The same model written with the C# builders and with the F# surface, for representative parity entries.
let private parityModels () : (string * Graph * Graph) list =
    let csharp = Duality.Builders.Model.Input("x", 2)
    let x = Model.input "x" 2
    let attention = readmeAttentionWeights ()
    let projection = ProjectionWeights(tensor [| 3; 2 |], null)
    let gain = NormWeights(tensor [| 2 |], null)
    let conv = ConvolutionWeights(tensor [| 2; 3 |], tensor [| 2 |])
    let lambda = DoubleTensor.FromShape([| 2; 2 |], [| 0.5; 0.1; 0.9; -0.2 |])
    let h0 = DoubleTensor.FromShape([| 2; 2 |], [| 1.0; 0.0; 0.0; 1.0 |])
    [ "attention with weights and a name",
      csharp.Attention(2, 1, 1, outFeatures = 2, weights = attention, name = "heads").Build(),
      x |> Layer.attention { Attention.linear 2 1 1 with Out = Some 2; Weights = Some attention; Name = Some "heads" } |> Model.build

      "a projection with every option",
      csharp.Projection(3, bias = false, name = "p", weights = projection, inFeatures = 2).Build(),
      x |> Layer.projectionWith { Projections.create 3 with Bias = false; Name = Some "p"; Weights = Some projection; In = Some 2 } |> Model.build

      "a complex recurrence with trainable eigenvalues, a readout, an initial state and a name",
      csharp.LinearRecurrence(2, true, lambda, StateKind.Complex, ComplexReadout.RealAndImaginary, h0, name = "memory").Build(),
      x |> Layer.recurrenceWith { Recurrences.create with Width = Some 2; Lambda = Some lambda; State = StateKind.Complex
                                                          Readout = ComplexReadout.RealAndImaginary; InitialState = Some h0; Name = Some "memory" }
        |> Model.build

      "a named recurrence with a decay branch",
      csharp.LinearRecurrence(decay = (fun d -> d.Projection(2)), name = "r").Build(),
      x |> Layer.recurrenceWith { Recurrences.create with Decay = Some(Layer.projection 2); Name = Some "r" } |> Model.build

      "norms with epsilon, affine, weights and names",
      csharp.LayerNorm(1e-3, false, "ln").RmsNorm(weights = gain, name = "rms").LayerNorm().Build(),
      x |> Layer.layerNormWith { Norms.defaults with Epsilon = Some 1e-3; Affine = false; Name = Some "ln" }
        |> Layer.rmsNormWith { Norms.defaults with Weights = Some gain; Name = Some "rms" }
        |> Layer.layerNormWith Norms.defaults |> Model.build

      "named gates, concatenations and added branches",
      csharp.Gate((fun (v: Sequence) -> v.Projection(2)), (fun (g: Sequence) -> g.Projection(2)), ActivationKind.SiLU, "g")
            .Gate((fun (g: Sequence) -> g.Projection(2)), ActivationKind.Sigmoid, "self")
            .Concat("c", (fun (a: Sequence) -> a.Projection(1)), (fun (b: Sequence) -> b.Projection(1)))
            .Add((fun (b: Sequence) -> b.Projection(2)), "sum").Add(fun (b: Sequence) -> b.Projection(2)).Build(),
      x |> Layer.gateNamed "g" (Layer.projection 2) (Layer.projection 2) ActivationKind.SiLU
        |> Layer.gateByNamed "self" (Layer.projection 2) ActivationKind.Sigmoid
        |> Layer.concatNamed "c" [ Layer.projection 1; Layer.projection 1 ]
        |> Layer.addBranchNamed "sum" (Layer.projection 2) |> Layer.addBranch (Layer.projection 2) |> Model.build

      "a causal convolution with weights and a name, names given afterwards",
      Duality.Builders.CausalConv1dBuilder.CausalConv1d(csharp, 3, true, "conv", conv).Scale(2.0, "twice").Build(),
      x |> Layer.causalConv1dWith 3 true (Some "conv") (Some conv) |> Layer.scale 2.0 |> Layer.named "twice" |> Model.build ]

let tests =
    testList "F#" [
        testCase "every C# builder method and parameter has an F# counterpart in the parity table" <| fun () ->
            let builders = csharpBuilders ()
            let table = parity |> List.map (fun (m, _, ps) -> m, ps) |> Map.ofList
            let missing =
                [ for key, parameters in builders do
                    match Map.tryFind key table with
                    | None -> yield sprintf "%s: no F# counterpart in the parity table" key
                    | Some covered ->
                        for p in parameters do
                            if not (covered |> List.exists (fun (name, _) -> name = p)) then
                                yield sprintf "%s: parameter '%s' has no F# counterpart in the parity table" key p
                        for name, _ in covered do
                            if not (List.contains name parameters) then yield sprintf "%s: the table covers '%s', which the method lacks" key name ]
            let stale =
                [ for m, _, _ in parity do
                    if not (builders |> List.exists (fun (k, _) -> k = m)) then yield sprintf "%s: in the table but not a C# builder method" m ]
            let absent =
                [ for m, cover, ps in parity do
                    for c in cover :: List.map snd ps do
                        if not (coverExists c) then yield sprintf "%s: %A is not in Duality.FSharp" m c ]
            match missing @ stale @ absent with
            | [] -> ()
            | problems -> failtestf "the F# surface must cover the C# builders:\n%s" (String.Join("\n", problems))

        testCase "parity: representative models built with the C# builders and the F# surface are equal graphs" <| fun () ->
            for what, csharp, fsharp in parityModels () do
                Expect.equal fsharp csharp what

        testCase "attention weights stacked the wrong way round are refused, naming the field and the layout" <| fun () ->
            let weights = AttentionWeights(tensor [| 3; 2 |], tensor [| 2; 3 |], tensor [| 2; 3 |], null)
            match Model.input "x" 3 |> Layer.attention { Attention.linear 2 1 1 with Weights = Some weights } |> Model.tryBuild with
            | Ok _ -> failtest "a [In, Heads*KeyWidth] Query must be refused"
            | Error problems ->
                match problems |> List.filter (fun d -> d.Problem = "weight shape mismatch") with
                | [ d ] ->
                    Expect.equal (d.Expected, d.Received) ("Query [2, 3]", "Query [3, 2]") "field and shapes"
                    Expect.stringContains d.Hint "[Heads*KeyWidth, In], head-major: rows h*KeyWidth .. (h+1)*KeyWidth-1 belong to head h" "layout"
                | other -> failtestf "one shape mismatch expected, got %A" other

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
                    | CausalConv1dNode n -> obj.ReferenceEquals(n, node)
                    | ChannelScaleNode n -> obj.ReferenceEquals(n, node)
                    | GroupNormNode n -> obj.ReferenceEquals(n, node)
                    | GatedLinearAttentionNode n -> obj.ReferenceEquals(n, node)
                    | RotaryNode n -> obj.ReferenceEquals(n, node)
                    | NormalisedReadoutNode n -> obj.ReferenceEquals(n, node)))

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
