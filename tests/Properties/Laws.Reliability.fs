/// Laws of reliability: every public entry point returns a correct result or raises the library's exception
/// (GraphException, naming the node, field or option, and a fix); nothing else escapes, whatever the arguments.
module Duality.Properties.LawsReliability

open System
open System.Diagnostics
open Expecto
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Reference
open Duality.Properties.Support
open Duality.Testing.Sequences
open Duality.Testing.Generators

/// Raises a GraphException with a diagnostic for which `check` holds; returns that diagnostic.
let private refused (what: string) (check: Diagnostic -> bool) (f: unit -> 'a) =
    try
        f () |> ignore
        failtestf "%s: no exception; expected a GraphException" what
    with :? GraphException as e ->
        match e.Diagnostics |> Seq.tryFind check with
        | Some d -> d
        | None -> failtestf "%s: the GraphException lacks the expected diagnostic:\n%s" what e.Message

let private problemAt problem path (d: Diagnostic) = d.Problem = problem && d.NodePath = path && d.Hint.Length > 0

// ---------------------------------------------------------------------------------------------------------------
// Builder fuzzing: random call sequences with hostile arguments, each printed when it lets anything else escape.

let private hostileInts = [| 0; -1; -7; Int32.MaxValue; Int32.MinValue; 1_000_000_000; 65536; 46341 |]

let private hostileDoubles = [| nan; infinity; -infinity; 0.0; -0.0; -0.5; 1.05; 2.0; 1e308; -1e308; Double.Epsilon |]

let private hostileNames =
    [| null; "a//b"; "/a"; "a/"; "a\tb"; "a\u0001b"; "a.b"; "a b"; ""; " "; "x"; "é"; "projection"; "projection_2"
       "block/sub"; "\u0000"; "a\u200Bb"; "gate"; String('n', 3000); "_2"; "-"; "😀" |]

let private undefined = [| 7; 99; -1; Int32.MaxValue |]

let private pick (random: Random) (xs: 'a[]) = xs.[random.Next xs.Length]

/// One sequence's source of arguments: each is hostile with the sequence's own probability, 0 for a third of the
/// sequences (they test that well-formed calls build) and up to 0.4 for the others.
type private Fuzz(seed: int) =
    let random = Random(seed)
    let hostility = if random.Next 3 = 0 then 0.0 else random.NextDouble() * 0.4
    member _.Random = random
    member _.Hostile = random.NextDouble() < hostility
    member f.Size(low, high) = if f.Hostile then pick random hostileInts else random.Next(low, high + 1)
    member f.Real(low: float, high: float) = if f.Hostile then pick random hostileDoubles else low + (high - low) * random.NextDouble()
    /// A node name: mostly the default (null), now and then a plain one, or a hostile one.
    member f.Name() = if f.Hostile then pick random hostileNames elif random.Next 4 = 0 then sprintf "n%d" (random.Next 1000) else null
    /// A value of an enum with `count` cases, or one that is not defined.
    member f.Option(count) = if f.Hostile then pick random undefined else random.Next count
    member f.Maybe(make: unit -> 'a) = if f.Hostile then Nullable(make ()) else Nullable()
    /// A small tensor of the given shape: when hostile, of another shape, or with a NaN or an infinity.
    member f.Tensor(shape: int list) =
        let shape =
            shape
            |> List.map (fun d -> if f.Hostile then d + random.Next(-1, 2) else d)
            |> List.map (fun d -> if d < 0 || d > 12 then random.Next(0, 4) else d)
            |> Array.ofList
        let data = Array.init (Array.fold (*) 1 shape) (fun _ -> random.NextDouble() * 1.8 - 0.9)
        if data.Length > 0 && f.Hostile then data.[0] <- pick random [| nan; infinity; 1.5 |]
        DoubleTensor.FromShape(shape, data)
    /// A name some node of the builder has, or a hostile one.
    member f.Existing(b: SequenceBuilder) = if f.Hostile || b.Nodes.Count = 0 then pick random hostileNames else b.Nodes.[random.Next b.Nodes.Count].Name

let private show (x: obj) =
    match x with
    | null -> "null"
    | :? string as s -> sprintf "%A" (if s.Length > 20 then s.Substring(0, 20) + "..." else s)
    | :? DoubleTensor as t -> sprintf "tensor%s" t.ShapeText
    | x -> string x

/// One builder call chosen at random, logged before it runs; branches run further calls, indented.
let rec private call (f: Fuzz) (log: ResizeArray<string>) depth (b: SequenceBuilder) : SequenceBuilder =
    let random = f.Random
    let note (text: string) = log.Add(String(' ', 2 * depth) + text)
    let branch () = Func<SequenceBuilder, SequenceBuilder>(fun s -> calls f log (depth + 1) (random.Next(0, 3)) s)
    let name = f.Name()
    let w = if b.Width.HasValue && b.Width.Value > 0 && b.Width.Value <= 12 then b.Width.Value else 2
    match random.Next 23 with
    | 0 ->
        let o, bias, inFeatures = f.Size(1, 6), random.Next 2 = 0, f.Maybe(fun () -> f.Size(1, 6))
        let weights =
            match random.Next 6 with
            | 0 -> ProjectionWeights(f.Tensor [ o; (if inFeatures.HasValue then inFeatures.Value else w) ], (if bias then f.Tensor [ o ] else null))
            | 1 when f.Hostile -> ProjectionWeights(null, null)
            | _ -> null
        note (sprintf "Projection(%d, bias = %b, name = %s, inFeatures = %O, weights = %s)" o bias (show name) inFeatures (show weights))
        b.Projection(o, bias = bias, name = name, weights = weights, inFeatures = inFeatures)
    | 1 ->
        let activation = enum<ActivationKind> (f.Option 7)
        note (sprintf "Gate(value, gate, %O, name = %s)" activation (show name))
        b.Gate(branch (), branch (), activation, name)
    | 2 ->
        let activation = enum<ActivationKind> (f.Option 7)
        note (sprintf "Gate(gate, %O, name = %s)" activation (show name))
        b.Gate(branch (), activation, name)
    | 3 ->
        let width = f.Maybe(fun () -> f.Size(1, 6))
        let state, readout = enum<StateKind> (f.Option 2), enum<ComplexReadout> (f.Option 2)
        let n = if width.HasValue then width.Value else w
        let complex = state = StateKind.Complex
        let shape = if complex then [ n; 2 ] else [ n ]
        let lambda = if random.Next 3 = 0 then f.Tensor shape else null
        let trainable = lambda = null || random.Next 2 = 0 || f.Hostile
        let h0 = if random.Next 4 = 0 then f.Tensor shape else null
        let decay = if (not complex || f.Hostile) && random.Next 4 = 0 then Some(branch ()) else None
        let lambda, trainable = if decay.IsSome && not f.Hostile then null, false else lambda, trainable
        note (sprintf "LinearRecurrence(width = %O, trainable = %b, lambda = %s, state = %O, readout = %O, initialState = %s, decay = %b, name = %s)"
                  width trainable (show lambda) state readout (show h0) decay.IsSome (show name))
        b.LinearRecurrence(width, trainable, lambda, state, readout, h0, Option.toObj decay, name)
    | 4 ->
        let lambda = Array.init (f.Size(1, 5) |> max 0 |> min 6) (fun _ -> f.Real(-1.0, 1.0))
        note (sprintf "LinearRecurrence(%A, name = %s)" lambda (show name))
        b.LinearRecurrence(lambda, name)
    | 5 ->
        let heads, key, value, out = f.Size(1, 3), f.Size(1, 4), f.Size(1, 4), f.Maybe(fun () -> f.Size(1, 6))
        let causal = random.Next 4 > 0 || f.Hostile
        let kernel = enum<AttentionKernel> (f.Option 2)
        let linearCausal = kernel = AttentionKernel.Linear && causal
        let featureMap = if kernel = AttentionKernel.Linear || f.Hostile then enum<ActivationKind> (f.Option 7) else ActivationKind.Identity
        let decay = if linearCausal && random.Next 2 = 0 || f.Hostile then Nullable(f.Real(0.5, 1.0)) else Nullable()
        let phase = if decay.HasValue && random.Next 2 = 0 || f.Hostile then Nullable(f.Real(-3.0, 3.0)) else Nullable()
        let gated = linearCausal && not decay.HasValue && random.Next 3 = 0 || f.Hostile
        note (sprintf "Attention(%d, %d, %d, out = %O, causal = %b, kernel = %O, featureMap = %O, decay = %O, phase = %O, inputDependentDecay = %b, name = %s)"
                  heads key value out causal kernel featureMap decay phase gated (show name))
        b.Attention(heads, key, value, out, causal, kernel, featureMap, decay, null, name, phase, gated)
    | 6 ->
        let kind = enum<ActivationKind> (f.Option 7)
        note (sprintf "Activation(%O, name = %s)" kind (show name))
        b.Activation(kind, name)
    | 7 ->
        note (sprintf "Residual(body, name = %s)" (show name))
        b.Residual(branch (), name)
    | 8 ->
        let other = f.Existing b
        note (sprintf "Add(%s, name = %s)" (show other) (show name))
        b.Add(other, name)
    | 9 ->
        note (sprintf "Add(branch, name = %s)" (show name))
        b.Add(branch (), name)
    | 10 ->
        let parts = Array.init (if f.Hostile then 0 else random.Next(1, 4)) (fun _ -> branch ())
        note (sprintf "Concat(%s, %d branches)" (show name) parts.Length)
        b.Concat(name, parts)
    | 11 ->
        let others = Array.init (random.Next(0, 3)) (fun _ -> f.Existing b)
        note (sprintf "ConcatWith(%s)" (others |> Array.map show |> String.concat ", "))
        b.ConcatWith(others)
    | 12 ->
        let start = f.Size(0, w - 1)
        let length = f.Size(1, max 1 (w - start))
        note (sprintf "Slice(%d, %d, name = %s)" start length (show name))
        b.Slice(start, length, name)
    | 13 ->
        let epsilon, affine = f.Real(1e-6, 1e-3), random.Next 3 > 0 || f.Hostile
        let weights =
            match random.Next 5 with
            | 0 -> NormWeights(f.Tensor [ w ], f.Tensor [ w ])
            | 1 when f.Hostile -> NormWeights(null, null)
            | _ -> null
        note (sprintf "LayerNorm(%g, affine = %b, name = %s, weights = %s)" epsilon affine (show name) (show weights))
        b.LayerNorm(epsilon, affine, name, weights)
    | 14 ->
        let epsilon, affine = f.Real(1e-6, 1e-3), random.Next 3 > 0
        note (sprintf "RmsNorm(%g, affine = %b, name = %s)" epsilon affine (show name))
        b.RmsNorm(epsilon, affine, name)
    | 15 ->
        let factor = f.Real(-2.0, 2.0)
        note (sprintf "Scale(%g, name = %s)" factor (show name))
        b.Scale(factor, name)
    | 16 ->
        let scope = if f.Hostile then pick random hostileNames else sprintf "block%d" (random.Next 4)
        note (sprintf "Scope(%s, body)" (show scope))
        b.Scope(scope, branch ())
    | 17 ->
        let target = f.Existing b
        note (sprintf "From(%s)" (show target))
        b.From(target)
    | 18 when f.Hostile || b.Current.Index = b.Nodes.Count - 1 ->
        let renamed = if f.Hostile then pick random hostileNames else sprintf "renamed%d" (random.Next 1000)
        note (sprintf "Named(%s)" (show renamed))
        b.Named(renamed)
    | 18
    | 19 ->
        note "Output()"
        b.Output()
    | 20 ->
        let kernel, bias = f.Size(1, 4), random.Next 2 = 0
        let weights = if random.Next 5 = 0 then ConvolutionWeights(f.Tensor [ w; kernel ], (if bias then f.Tensor [ w ] else null)) else null
        note (sprintf "CausalConv1d(%d, bias = %b, name = %s, weights = %s)" kernel bias (show name) (show weights))
        b.CausalConv1d(kernel, bias, name, weights)
    | 21 ->
        let heads = f.Size(1, 3)
        let angles = if random.Next 3 = 0 then Array.ofSeq (f.Tensor [ w / max 1 heads / 2 ]).Data else null
        note (sprintf "Rotary(%d, angles = %s, name = %s)" heads (if isNull angles then "null" else sprintf "[%d]" angles.Length) (show name))
        b.Rotary(heads, angles, name)
    | _ ->
        let input = if f.Hostile then pick random hostileNames else sprintf "input%d" (random.Next 1000)
        let features = f.Size(1, 6)
        note (sprintf "Input(%s, %d)" (show input) features)
        b.Input(input, features)

and private calls f log depth count (b: SequenceBuilder) =
    Seq.fold (fun b _ -> call f log depth b) b (seq { 1 .. count })

/// Built or refused; any other exception fails, printing the seed and the calls.
let private fuzz seed =
    let f = Fuzz(seed)
    let log = ResizeArray<string>()
    try
        let name = if f.Hostile then pick f.Random hostileNames else "x"
        let features = f.Size(1, 6)
        log.Add(sprintf "Model.Input(%s, %d)" (show name) features)
        let b = calls f log 0 (f.Random.Next(1, 12)) (Model.Input(name, features))
        log.Add "Build()"
        let g = b.Build()
        g.Summary() |> ignore
        g.ToString() |> ignore
        ParameterCounts.Total g |> ignore
        true
    with
    | :? GraphException as e ->
        for d in e.Diagnostics do
            if isNull d.NodePath || String.IsNullOrEmpty d.Problem || String.IsNullOrEmpty d.Hint then
                failtestf "seed %d: a diagnostic without a node, problem or hint: %O\n%s" seed d (String.Join("\n", log))
        false
    | e -> failtestf "seed %d: %s escaped after these calls:\n%s\n%O" seed (e.GetType().Name) (String.Join("\n", log)) e

// ---------------------------------------------------------------------------------------------------------------
// Compiled modules given hostile tensors: the reference's answer, or a GraphException.

let private modes = [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ]

let private f64 = torch.ScalarType.Float64

/// Any [batch, time, features] output as a sequence (empty ones too); another rank is a wrong answer.
let private sequenceOf (y: torch.Tensor) : Sequence =
    if y.dim() <> 3L then failwithf "an output of rank %d" (y.dim())
    elif y.numel() = 0L then Array3D.zeroCreate (int y.shape.[0]) (int y.shape.[1]) (int y.shape.[2])
    else ofTensor y

/// The same shape, NaN where the reference has NaN, and within 1e-10 (scaled) elsewhere.
let private answerError (expected: Sequence) (actual: Sequence) =
    if not (sameShape expected actual) then
        Some(sprintf "shape [%d, %d, %d], expected [%d, %d, %d]" (Array3D.length1 actual) (Array3D.length2 actual) (Array3D.length3 actual)
                 (Array3D.length1 expected) (Array3D.length2 expected) (Array3D.length3 expected))
    else
        let mutable nanMismatch = false
        expected |> Array3D.iteri (fun i j k e -> if Double.IsNaN e <> Double.IsNaN actual.[i, j, k] then nanMismatch <- true)
        let clean (x: Sequence) = x |> Array3D.map (fun v -> if Double.IsNaN v then 0.0 else v)
        let error = scaledError (clean expected) (clean actual)
        if nanMismatch then Some "NaN where the reference has none, or none where it has one"
        elif error > 1e-10 then Some(sprintf "scaled error %.3e" error)
        else None

type private Expected =
    | Answer of Sequence[]
    | Refusal

/// Runs one case; a problem is described, or None.
let private judge (expected: Expected) (run: unit -> torch.Tensor[]) =
    try
        let outputs = run ()
        match expected with
        | Refusal -> Some "returned outputs; expected a GraphException"
        | Answer reference ->
            if outputs.Length <> reference.Length then Some(sprintf "%d outputs, expected %d" outputs.Length reference.Length)
            else Array.map2 (fun e y -> answerError e (sequenceOf y)) reference outputs |> Array.tryPick id
    with
    | :? GraphException as e ->
        match expected with
        | Refusal when e.Diagnostics |> Seq.forall (fun d -> d.Hint.Length > 0) -> None
        | Refusal -> Some "a GraphException without a hint"
        | Answer _ -> Some(sprintf "refused a valid input: %s" (e.Message.Replace('\n', ' ')))
    | e -> Some(sprintf "%s escaped: %s" (e.GetType().Name) (e.Message.Split('\n').[0]))

let private fixedGraphs () =
    let x = Model.Input("x", 3)
    [ "every kind",
      x.Projection(4).CausalConv1d(3).LinearRecurrence()
          .Gate((fun (v: SequenceBuilder) -> v.Projection(4)), (fun (g: SequenceBuilder) -> g.Projection(4)), ActivationKind.SiLU)
          .LayerNorm().Attention(2, 2, 3, outFeatures = Nullable 4, decay = Nullable 0.9).RmsNorm()
          .Residual(fun (r: SequenceBuilder) -> r.Projection(4)).Scale(0.5).Slice(1, 3)
          .Concat((fun (l: SequenceBuilder) -> l.Projection(2)), (fun (r: SequenceBuilder) -> r.Tanh()))
          .Activation(ActivationKind.EluPlusOne).Build()
      "softmax, gated, complex, decay branch",
      x.Attention(1, 2, 2, kernel = AttentionKernel.Softmax).Attention(2, 2, 2, inputDependentDecay = true)
          .LinearRecurrence(state = StateKind.Complex, readout = ComplexReadout.RealAndImaginary)
          .LinearRecurrence(decay = fun (d: SequenceBuilder) -> d.Projection(1)).Build()
      "two inputs, two outputs",
      Model.Input("x", 2).Input("y", 3).ConcatWith("x")
          .Attention(1, 2, 2, decay = Nullable 0.8, decayPhase = Nullable 0.3, featureMap = ActivationKind.EluPlusOne).Output()
          .From("y").LinearRecurrence([| 0.5; -0.5; 1.0 |]).Output().Build()
      "non-causal", x.Attention(1, 2, 2, causal = false, kernel = AttentionKernel.Softmax).Attention(1, 2, 2, causal = false).Build() ]

let private hostileGraphs () =
    let generated =
        Gen.sampleWithSeed (FsCheck.Rnd(11UL, 3UL)) 30 10 architecture |> Array.mapi (fun i a -> sprintf "generated %d" i, build a) |> List.ofArray
    fixedGraphs () @ generated |> List.map (fun (n, g) -> n, InitializeWeights.Run(g, 3, WeightInit.Perturbed))

/// Every case of one graph: (label, expected, run).
let private hostileCases (name: string, g: Graph) =
    let inputs batch time = let r = Random(5) in g.InputNodes |> Seq.map (fun i -> randomSequence r batch time i.Features 1.0) |> Array.ofSeq
    let tensors (xs: Sequence[]) = xs |> Array.map (toTensor f64)
    let reference (xs: Sequence[]) = Answer(ReferenceEvaluator.Evaluate(g, xs))
    let good = tensors (inputs 2 4)
    let replaceFirst (x: torch.Tensor) = Array.append [| x |] good.[1..]
    let refusals =
        [ "rank 0", replaceFirst (torch.tensor(1.0, dtype = f64))
          "rank 1", replaceFirst (good.[0].reshape(-1L))
          "rank 2", replaceFirst (good.[0].select(1, 0L))
          "rank 4", replaceFirst (good.[0].unsqueeze(0))
          "one feature more", replaceFirst (torch.zeros(2L, 4L, good.[0].shape.[2] + 1L, dtype = f64))
          "int32", replaceFirst (good.[0].to_type(torch.ScalarType.Int32))
          "int64", replaceFirst (good.[0].to_type(torch.ScalarType.Int64))
          "float16", replaceFirst (good.[0].to_type(torch.ScalarType.Float16))
          "float32", replaceFirst (good.[0].to_type(torch.ScalarType.Float32))
          "bool", replaceFirst (good.[0].to_type(torch.ScalarType.Bool))
          "disposed", replaceFirst (let y = good.[0].clone() in y.Dispose(); y)
          "null tensor", replaceFirst null
          "null array", null
          "no inputs", [||]
          "one input too many", Array.append good [| good.[0] |] ]
        @ (if good.Length < 2 then []
           else [ "batch mismatch", Array.append [| good.[0] |] [| good.[1].narrow(0, 0L, 1L) |]
                  "time mismatch", Array.append [| good.[0] |] [| good.[1].narrow(1, 0L, 2L) |] ])
    let answers =
        [ for batch, time in [ (2, 5); (2, 0); (0, 3); (0, 0); (1, 1); (1, 70) ] do
              let xs = inputs batch time
              yield sprintf "batch %d, time %d" batch time, reference xs, tensors xs
          let xs = inputs 2 6
          xs.[0].[1, 0, 0] <- nan
          yield "NaN at the first step of the second sequence", reference xs, tensors xs
          let xs = inputs 2 7
          yield "non-contiguous", reference xs, xs |> Array.map (fun x -> (toTensor f64 x).transpose(1, 2).contiguous().transpose(1, 2))
          yield "strided", reference xs, xs |> Array.map (fun x -> let t = toTensor f64 x in torch.stack([| t; t |], 3).select(3, 1L))
          let one = inputs 1 4
          let three = one |> Array.map (fun x -> Array3D.init 3 4 (Array3D.length3 x) (fun _ t f -> x.[0, t, f]))
          yield "expanded batch (stride 0)", reference three, one |> Array.map (fun x -> (toTensor f64 x).expand(3L, 4L, int64 (Array3D.length3 x))) ]
    let float32 = g.Compile(CompileOptions(Seed = 1))
    [ for mode in modes do
          let model = g.Compile(CompileOptions(DType = f64, Execution = mode))
          for grad in [ false; true ] do
              let forward (xs: torch.Tensor[]) () = if grad then model.Forward(xs) else noGrad (fun () -> model.Forward(xs))
              let label = sprintf "%s, %A, gradients %b" name mode grad
              for what, expected, xs in answers do yield sprintf "%s, %s" label what, expected, forward xs
              if not grad then
                  for what, xs in refusals do yield sprintf "%s, %s" label what, Refusal, forward xs
          if mode = ExecutionMode.Auto && causal g then
              let steps = model.ToStepForm()
              for what, expected, xs in answers do yield sprintf "%s, step form unrolled, %s" name what, expected, (fun () -> steps.Unroll(xs))
              for what, xs in refusals do yield sprintf "%s, step form unrolled, %s" name what, Refusal, (fun () -> steps.Unroll(xs))
              let state = steps.InitialState(2L)
              let step = good |> Array.map (fun x -> x.select(1, 0L))
              let stepOf (xs: torch.Tensor[]) s () = let struct (ys, _) = steps.Step(xs, s) in ys |> Array.map (fun y -> y.unsqueeze(1))
              let firstStep (x: torch.Tensor) = Array.append [| x |] step.[1..]
              for what, xs in [ "rank 3", firstStep (step.[0].unsqueeze(1)); "rank 0", firstStep (torch.tensor(1.0, dtype = f64))
                                "float32", firstStep (step.[0].to_type(torch.ScalarType.Float32)); "batch 1 into a state of 2", firstStep (step.[0].narrow(0, 0L, 1L))
                                "null tensor", firstStep null; "null array", null ] do
                  yield sprintf "%s, step, %s" name what, Refusal, stepOf xs state
              yield sprintf "%s, step with a null state" name, Refusal, stepOf step null
              yield sprintf "%s, step with another module's state" name, Refusal, stepOf step (float32.ToStepForm().InitialState(2L))
              yield sprintf "%s, initial state of batch -1" name, Refusal, (fun () -> steps.InitialState(-1L) |> ignore; [||])
              let empty = inputs 0 1
              yield sprintf "%s, step of batch 0" name, reference empty, stepOf (tensors empty |> Array.map (fun x -> x.select(1, 0L))) (steps.InitialState(0L))
      yield sprintf "%s, float64 into a float32 module" name, Refusal, (fun () -> float32.Forward(good))
      yield sprintf "%s, float16 into a float32 module" name, Refusal, (fun () -> float32.Forward(good |> Array.map (fun x -> x.to_type(torch.ScalarType.Float16)))) ]

// ---------------------------------------------------------------------------------------------------------------

/// Seconds to build `count` default-named projections, the least of three runs (robust to a loaded machine).
let private buildTime count =
    [ 1 .. 3 ]
    |> List.map (fun _ ->
        let watch = Stopwatch.StartNew()
        let mutable b = Model.Input("x", 2)
        for _ in 1 .. count do b <- b.Projection(2)
        b.Build() |> ignore
        watch.Elapsed.TotalSeconds)
    |> List.min

/// The name the builder gave before it kept its tables: the first of kind, kind_2, ... that no node has and no path runs through.
let private plainDefault (names: string list) kind =
    let taken (c: string) = names |> List.exists (fun n -> n = c || n.StartsWith(c + "/", StringComparison.Ordinal))
    Seq.initInfinite (fun i -> if i = 0 then kind else sprintf "%s_%d" kind (i + 1)) |> Seq.find (taken >> not)

// ---------------------------------------------------------------------------------------------------------------
// Lifetimes: a managed tensor nothing else holds may be finalised (its native tensor freed) as soon as the JIT sees its
// last use, which can be the native call still reading it. Every entry point keeps its temporaries in a dispose scope.

/// Tensors the current thread creates outside every dispose scope while f runs, and f's result.
let private createdOutsideScopes (f: unit -> 'a) =
    let statistics = DisposeScopeManager.Statistics.TensorStatistics
    let before = statistics.CreatedOutsideScopeCount
    let result = f ()
    statistics.CreatedOutsideScopeCount - before, result

let private lifetimes =
    testCase "every entry point holds its temporaries in a dispose scope (none is left to a finaliser, which could free it while a native call reads it): forward with and without gradients, the step form's steps and unroll, reading weights back and the equivalence check create no tensor outside a scope, the reverse passes none but libtorch's incoming gradient each, for the mLSTM, Mamba-2, GLA, RG-LRU and RetNet blocks and a plain linear attention" <| fun () ->
        // with the number of fused reverse passes each runs: libtorch hands each its incoming gradient as a new tensor before
        // it starts (mLSTM: attention, group norm, gate; RetNet: those and the rotations of q and k; Mamba-2: convolution,
        // attention, gated RMSNorm, gate; a plain linear attention: its masked form's causal product)
        let graphs =
            [ for name, block, passes in
                  [ "mLSTM", Blocks.Mlstm(2, 2, 2), 3L; "Mamba-2", Blocks.Mamba2(4, 2, 2, 1, 4), 4L; "GLA", Blocks.Gla(2, 2, 2, 3, 16.0), 3L
                    "RG-LRU", Blocks.RgLru(1), 1L; "RetNet", Blocks.RetNet(2, 2, 2), 5L ] ->
                name, Model.Input("x", 4).Then(block).Build(), passes
              yield "linear attention", Model.Input("x", 4).Attention(2, 2, 2, outFeatures = 4).Build(), 1L ]
        let generator = new torch.Generator(5UL)
        let x = torch.randn([| 2L; 9L; 4L |], dtype = torch.ScalarType.Float64, generator = generator)
        for name, g, passes in graphs do
            let model = InitializeWeights.Run(g, 3).Compile(CompileOptions.Float64)
            let label what = sprintf "%s: %s" name what
            let none what (count, _) = Expect.equal count 0L (label what + ", tensors created outside a scope")
            none "forward without gradients" (createdOutsideScopes (fun () -> noGrad (fun () -> model.forward x)))
            none "step form, unroll" (createdOutsideScopes (fun () -> noGrad (fun () -> model.ToStepForm().Unroll x)))
            let stepForm = model.ToStepForm()
            let state = stepForm.InitialState 2L
            let first = x.select(1, 0L)
            none "step form, one step" (createdOutsideScopes (fun () -> noGrad (fun () -> stepForm.Step(first, state))))
            none "reading weights back" (createdOutsideScopes (fun () -> model.ToGraph()))
            none "equivalence check" (createdOutsideScopes (fun () -> Duality.Verification.Equivalence.Check(model, model)))
            withGrad (fun () ->
                let leaf = x.detach().requires_grad_(true)
                let count, y = createdOutsideScopes (fun () -> model.forward leaf)
                Expect.equal count 0L (label "forward with gradients, tensors created outside a scope")
                let loss = y.square().sum()
                let count, () = createdOutsideScopes (fun () -> loss.backward())
                Expect.equal count passes (label "backward, tensors created outside a scope (only libtorch's incoming gradients)"))

/// Calls in a compiled assembly's IL: (calling type, calling method, callee type, callee name, callee parameter types
/// (a primitive's name, "class" otherwise), whether the call's result goes straight into a local or a field (a using
/// variable a closure captures is a field of the closure).
let private callsIn (assemblyPath: string) =
    let opCodes =
        typeof<Reflection.Emit.OpCodes>.GetFields()
        |> Array.map (fun f -> f.GetValue(null) :?> Reflection.Emit.OpCode)
        |> Array.map (fun o -> uint16 o.Value, o)
        |> dict
    use pe = new Reflection.PortableExecutable.PEReader(IO.File.OpenRead assemblyPath)
    let md = Reflection.Metadata.PEReaderExtensions.GetMetadataReader pe
    // a signature's parameter types, enough of ECMA-335 II.23.2 for TorchSharp's methods: primitives by name, the rest "class"
    let parameters (blob: byte[]) =
        let mutable i = 1
        let compressed () =
            let b = int blob.[i]
            if b &&& 0x80 = 0 then i <- i + 1; b
            elif b &&& 0xC0 = 0x80 then i <- i + 2; ((b &&& 0x3F) <<< 8) ||| int blob.[i - 1]
            else i <- i + 4; ((b &&& 0x1F) <<< 24) ||| (int blob.[i - 3] <<< 16) ||| (int blob.[i - 2] <<< 8) ||| int blob.[i - 1]
        let rec read () =
            let b = blob.[i]
            i <- i + 1
            match b with
            | 0x02uy -> "bool" | 0x08uy -> "int" | 0x0Auy -> "long" | 0x0Cuy -> "float" | 0x0Duy -> "double"
            | 0x11uy | 0x12uy -> compressed () |> ignore; "class"
            | 0x10uy | 0x1Duy | 0x0Fuy -> read () |> ignore; "class"
            | 0x13uy | 0x1Euy -> compressed () |> ignore; "class"
            | 0x15uy ->
                read () |> ignore
                for _ in 1 .. compressed () do read () |> ignore
                "class"
            | _ -> "other"
        let count = compressed ()
        read () |> ignore
        [ for _ in 1 .. count -> read () ]
    let callee (token: int) =
        let handle = Reflection.Metadata.Ecma335.MetadataTokens.EntityHandle token
        if handle.Kind = Reflection.Metadata.HandleKind.MemberReference then
            let m = md.GetMemberReference(Reflection.Metadata.MemberReferenceHandle.op_Explicit handle)
            if m.Parent.Kind = Reflection.Metadata.HandleKind.TypeReference then
                let parent = md.GetTypeReference(Reflection.Metadata.TypeReferenceHandle.op_Explicit m.Parent)
                let blob = md.GetBlobBytes m.Signature
                Some(md.GetString parent.Name, md.GetString m.Name, (if blob.[0] &&& 0x0Fuy = 0uy then parameters blob else []))
            else None
        else None
    [ for typeHandle in md.TypeDefinitions do
        let t = md.GetTypeDefinition typeHandle
        for methodHandle in t.GetMethods() do
            let m = md.GetMethodDefinition methodHandle
            if m.RelativeVirtualAddress <> 0 then
                let il = Reflection.Metadata.PEReaderExtensions.GetMethodBody(pe, m.RelativeVirtualAddress).GetILBytes()
                let mutable i = 0
                while i < il.Length do
                    let code = if il.[i] = 0xFEuy then (i <- i + 2; 0xFE00us ||| uint16 il.[i - 1]) else (i <- i + 1; uint16 il.[i - 1])
                    let op = opCodes.[code]
                    let size =
                        match op.OperandType with
                        | Reflection.Emit.OperandType.InlineNone -> 0
                        | Reflection.Emit.OperandType.ShortInlineBrTarget | Reflection.Emit.OperandType.ShortInlineI
                        | Reflection.Emit.OperandType.ShortInlineVar -> 1
                        | Reflection.Emit.OperandType.InlineVar -> 2
                        | Reflection.Emit.OperandType.InlineI8 | Reflection.Emit.OperandType.InlineR -> 8
                        | Reflection.Emit.OperandType.InlineSwitch -> 4 + 4 * BitConverter.ToInt32(il, i)
                        | _ -> 4
                    if op.FlowControl = Reflection.Emit.FlowControl.Call && op.OperandType = Reflection.Emit.OperandType.InlineMethod then
                        match callee (BitConverter.ToInt32(il, i)) with
                        | Some(owner, name, parameterTypes) ->
                            let next = i + size
                            let stored =
                                next < il.Length
                                && (let c = il.[next] in (c >= 0x0Auy && c <= 0x0Duy) || c = 0x13uy || c = 0x80uy || c = 0x7Duy
                                                         || (c = 0xFEuy && next + 1 < il.Length && il.[next + 1] = 0x0Euy))
                            yield md.GetString t.Name, md.GetString m.Name, owner, name, parameterTypes, stored
                        | None -> ()
                    i <- i + size ]

/// Where the compiled library would hand libtorch a number TorchSharp makes into a Scalar and leaves to its finaliser.
let private unheldNumbers (assemblyPath: string) =
    let number = set [ "double"; "float"; "int"; "long"; "bool" ]
    [ for caller, methodName, owner, name, parameterTypes, stored in callsIn assemblyPath do
        let why =
            match owner, name with
            | "Scalar", "op_Implicit" when not stored -> Some "an implicit Scalar passed on, not held in a using variable"
            | _, "ToScalar" when not stored -> Some "a Scalar passed on, not held in a using variable or a static field"
            | "Tensor", "op_Addition" when parameterTypes |> List.forall (fun p -> p = "class") -> Some "a + b between tensors (alpha 1 made by TorchSharp): use Plus"
            // a number made into a Tensor (op_Implicit) is a tensor, which the entry points' dispose scopes hold
            | "Tensor", n when n.StartsWith "op_" && n <> "op_Implicit" && parameterTypes |> List.exists number.Contains ->
                Some (sprintf "%s with a number: use Times, Over or a held Scalar" n)
            | "Tensor", ("add" | "add_") when parameterTypes.Length = 1 -> Some (sprintf "%s without alpha (TorchSharp makes a 1)" name)
            | "Tensor", "square" -> Some "square() (TorchSharp makes a 2): use Squared"
            | "torch", "arange" when parameterTypes.Length < 6 -> Some "arange without start and step (TorchSharp makes them): pass held Scalars"
            | _ -> None
        match why with
        | Some reason -> yield sprintf "%s.%s: %s" caller methodName reason
        | None -> () ]

let private heldNumbersInTheAssembly =
    testCase "the compiled library hands libtorch no number TorchSharp would leave to a finaliser: no + between tensors, no operator with a number, no square(), add(t) or arange without its step, and every Scalar it makes held in a using variable or a static field (a scan of Duality.Compiler's IL, which sees AttentionModule.Step's held Scalars)" <| fun () ->
        let path = typeof<Duality.Torch.CompiledGraph>.Assembly.Location
        let held =
            callsIn path |> List.filter (fun (caller, name, owner, callee, _, stored) -> caller = "AttentionModule" && name = "Step" && owner = "Scalar" && callee = "op_Implicit" && stored)
        Expect.equal held.Length 3 "the scan sees the step's three held Scalars (re, im and the decay)"
        let found = unheldNumbers path
        Expect.isEmpty found (sprintf "every number handed to libtorch is held; not: %s" (String.Join("; ", found)))
        // the scan finds what it looks for: this assembly's own laws use a + b and square() freely
        Expect.isNonEmpty (unheldNumbers (Reflection.Assembly.GetExecutingAssembly().Location)) "the laws' own assembly has unheld numbers"

/// Runs f while another thread collects and runs finalisers without pause, and returns f's result.
let private underCollections (f: unit -> 'a) =
    let stop = ref false
    let collector =
        Threading.Thread((fun () ->
            while not stop.Value do
                GC.Collect()
                GC.WaitForPendingFinalizers()), IsBackground = true)
    collector.Start()
    try f ()
    finally
        stop.Value <- true
        collector.Join()

/// A number TorchSharp turns into a Scalar for a call (a factor, a fill value, the alpha 1 of a + b) is freed only by
/// its finaliser, which a collection may run while libtorch still reads it: libtorch's exception from Scalar::toDouble,
/// or a value read from freed memory. Every such number the modules and kernels hand libtorch is held until the call
/// returns.
let private heldNumbers =
    testCase "under collections on another thread, every block family's forward (every execution mode, float32 and float64), forward and backward, and step form give the values they give without them, never libtorch's exception: no number handed to libtorch is left to a finaliser during the call" <| fun () ->
        let blocks =
            [ "minGRU", Blocks.MinGru(4); "minLSTM", Blocks.MinLstm(4); "RG-LRU", Blocks.RgLru(2); "Griffin", Blocks.GriffinRecurrent(4, 1, 4)
              "LRU", Blocks.Lru(4); "gated MLP", Blocks.GatedMlp(2); "GLA", Blocks.Gla(2, 2, 2, 3, 16.0); "RetNet", Blocks.RetNet(2, 2, 2)
              "Mamba-2", Blocks.Mamba2(4, 2, 2, 1, 4); "mLSTM", Blocks.Mlstm(2, 2, 2) ]
        let generator = new torch.Generator(11UL)
        let x64 = torch.randn([| 2L; 7L; 4L |], dtype = torch.ScalarType.Float64, generator = generator)
        // each result made in a dispose scope, which holds the temporaries it is made from: a tensor only its finaliser
        // frees (a forward's output converted at once) could be freed by a collection while libtorch still reads it
        let held (f: unit -> torch.Tensor) =
            use _ = torch.NewDisposeScope()
            (f ()).MoveToOuterDisposeScope()
        let runs (model: Duality.Torch.CompiledGraph) (x: torch.Tensor) =
            let forward = noGrad (fun () -> held (fun () -> model.forward(x).to_type(torch.ScalarType.Float64)))
            let gradient =
                withGrad (fun () ->
                    held (fun () ->
                        let leaf = x.detach().requires_grad_(true)
                        // y y, not square(): the law's own arithmetic hands libtorch no number either
                        backwardOf (fun () -> (let y = model.forward(leaf) in (y * y).sum()))
                        leaf.grad.to_type(torch.ScalarType.Float64)))
            let stepped = noGrad (fun () -> held (fun () -> model.ToStepForm().Unroll(x).to_type(torch.ScalarType.Float64)))
            [ forward; gradient; stepped ]
        let cases =
            [ for name, block in blocks do
                let g = InitializeWeights.Run(Model.Input("x", 4).Then(block).Build(), 5)
                for dtype in [ torch.ScalarType.Float32; torch.ScalarType.Float64 ] do
                    for mode in [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ] do
                        let model = g.Compile(CompileOptions(DType = dtype, Execution = mode))
                        yield sprintf "%s, %A, %A" name dtype mode, model, x64.to_type(dtype) ]
        let expected = [ for _, model, x in cases -> runs model x ]
        underCollections (fun () ->
            for _ in 1 .. 6 do
                for (label, model, x), values in List.zip cases expected do
                    let actual = runs model x
                    for (e: torch.Tensor), a, what in List.zip3 values actual [ "forward"; "input gradient"; "step form" ] do
                        Expect.isTrue (e.allclose(a, 0.0, 0.0, true)) (sprintf "%s, %s: the same values" label what))

let tests =
    testList "reliability" [
        lifetimes
        heldNumbers
        heldNumbersInTheAssembly

        testCase "builder fuzzing: random sequences of builder calls with hostile arguments (0, negative, int.MaxValue, NaN, Inf, undefined enums, odd names) either build or raise GraphException" <| fun () ->
            let outcomes = [ for seed in 1 .. 3000 -> fuzz seed ]
            let built = outcomes |> List.filter id |> List.length
            // both outcomes occur often, or the generator has degenerated
            Expect.isGreaterThan built 450 "some sequences build"
            Expect.isGreaterThan (outcomes.Length - built) 450 "some sequences are refused"

        testCase "compiled modules given hostile tensors (ranks 0-4, wrong widths, dtypes int/float16/float64 vs float32, T = 0, batch 0, non-contiguous, NaN) either return the reference's answer (float64 1e-10 scaled) or raise GraphException" <| fun () ->
            let failures =
                [ for graph in hostileGraphs () do
                      for label, expected, run in hostileCases graph do
                          match judge expected run with
                          | Some problem -> yield sprintf "%s: %s" label problem
                          | None -> () ]
            if not failures.IsEmpty then
                failtestf "%d cases failed:\n%s" failures.Length (String.Join("\n", failures |> List.truncate 40))

        testCase "Slice: a start and length summing past int.MaxValue are refused as out of range, not overflowed" <| fun () ->
            refused "Slice(1, int.MaxValue)" (problemAt "slice out of range" "slice")
                (fun () -> Model.Input("x", 4).Slice(1, Int32.MaxValue).Build()) |> ignore
            refused "Slice(int.MaxValue, int.MaxValue)" (problemAt "slice out of range" "slice")
                (fun () -> Model.Input("x", 4).Slice(Int32.MaxValue, Int32.MaxValue).Build()) |> ignore

        testCase "sizes: a weight tensor over 2^31 - 1 elements is refused by the shape rule naming the field and the count; parameter counts are long" <| fun () ->
            let d = refused "Projection(1e9)" (problemAt "invalid size" "projection") (fun () -> Model.Input("x", 4).Projection(1_000_000_000).Build())
            Expect.stringContains d.Received "Weight [1000000000, 4]" "names the field and its shape"
            Expect.stringContains d.Received "4,000,000,000 elements" "gives the element count"
            refused "compiling Projection(1e9)" (problemAt "invalid size" "projection")
                (fun () -> Graph.Create([ Input("x", 4) :> Node; Projection("projection", NodeId 0, 4, 1_000_000_000) ], [ NodeId 1 ]).Compile()) |> ignore
            let q = refused "65536 heads of 65536" (problemAt "invalid size" "attention") (fun () -> Model.Input("x", 2).Attention(65536, 65536, 1).Build())
            Expect.stringContains q.Received "Query" "names the query weights"
            refused "a complex recurrence of int.MaxValue neurons" (problemAt "invalid size" "recurrence")
                (fun () -> Graph.Create([ Input("x", Int32.MaxValue) :> Node; LinearRecurrence("recurrence", NodeId 0, Int32.MaxValue, StateKind.Complex) ], [ NodeId 1 ])) |> ignore
            refused "a concat wider than int.MaxValue" (problemAt "invalid size" "concat")
                (fun () -> Model.Input("x", Int32.MaxValue).Input("y", 2).ConcatWith("x").Build()) |> ignore
            refused "a convolution of int.MaxValue channels and taps" (problemAt "invalid size" "conv")
                (fun () -> Model.Input("x", Int32.MaxValue).CausalConv1d(Int32.MaxValue).Build()) |> ignore
            // just under the bound: builds, and counts past int.MaxValue exactly
            let g = Model.Input("x", 46341).Projection(46340).Build()
            Expect.equal (ParameterCounts.Total g) (46341L * 46340L + 46340L) "the count is exact in long"
            Expect.equal (ParameterCounts.Of(Attention("a", NodeId 0, 100000, 100000, 100000, 100000, OutFeatures = Nullable 100000)))
                         (100000L * 300000L * 100000L + 100000L * 100000L * 100000L) "attention counts in long"

        testCase "enums: undefined values of ActivationKind, AttentionKernel, StateKind and ComplexReadout are refused by the shape rule as invalid option, naming the field and listing the values" <| fun () ->
            let x = Model.Input("x", 4)
            let cases =
                [ "Kind", typeof<ActivationKind>, "activation", (fun () -> x.Activation(enum<ActivationKind> 99, name = "activation").Build())
                  "Activation", typeof<ActivationKind>, "gate",
                  (fun () -> x.Gate((fun (g: SequenceBuilder) -> g.Projection(4)), enum<ActivationKind> 99, name = "gate").Build())
                  "Kernel", typeof<AttentionKernel>, "attention", (fun () -> x.Attention(1, 2, 2, kernel = enum<AttentionKernel> 7, name = "attention").Build())
                  "FeatureMap", typeof<ActivationKind>, "attention",
                  (fun () -> x.Attention(1, 2, 2, featureMap = enum<ActivationKind> -1, name = "attention").Build())
                  "State", typeof<StateKind>, "recurrence", (fun () -> x.LinearRecurrence(state = enum<StateKind> 5, name = "recurrence").Build())
                  "Readout", typeof<ComplexReadout>, "recurrence",
                  (fun () -> x.LinearRecurrence(state = StateKind.Complex, readout = enum<ComplexReadout> 5, name = "recurrence").Build()) ]
            for field, enumType, node, build in cases do
                let d = refused (sprintf "%s of %s" field node) (problemAt "invalid option" node) build
                Expect.stringContains d.Received (field + " = ") (sprintf "%s: names the field" field)
                for value in Enum.GetNames enumType do
                    Expect.stringContains d.Hint (sprintf "%s.%s" enumType.Name value) (sprintf "%s: lists %s" field value)

        testCase "Graph.Create: out-of-range and repeated output ids, null lists, null names and null weights records raise GraphException" <| fun () ->
            let x = Input("x", 2) :> Node
            let p = Projection("p", NodeId 0, 2, 2) :> Node
            refused "an output id past the end, twice" (fun d -> d.Problem = "unknown node") (fun () -> Graph.Create([ x ], [ NodeId 5; NodeId 5 ])) |> ignore
            refused "a negative output id" (fun d -> d.Problem = "unknown node") (fun () -> Graph.Create([ x ], [ NodeId -1 ])) |> ignore
            refused "a repeated output" (problemAt "duplicate output" "p") (fun () -> Graph.Create([ x; p ], [ NodeId 1; NodeId 1 ])) |> ignore
            refused "a null node list" (fun d -> d.Problem = "missing node list") (fun () -> Graph.Create(null, [ NodeId 0 ])) |> ignore
            refused "a null output list" (fun d -> d.Problem = "missing output list") (fun () -> Graph.Create([ x ], null)) |> ignore
            refused "a null node" (fun d -> d.Problem = "missing node") (fun () -> Graph.Create([ x; null ], [ NodeId 0 ])) |> ignore
            refused "a null name" (fun d -> d.Problem = "missing name") (fun () -> Graph.Create([ Input(null, 2) :> Node ], [ NodeId 0 ])) |> ignore
            let nullWeights : Node list =
                [ Projection("p", NodeId 0, 2, 2, true, ProjectionWeights(null, null))
                  Attention("a", NodeId 0, 2, 1, 2, 2, Weights = AttentionWeights(null, null, null, null))
                  LayerNorm("n", NodeId 0, 2, Weights = NormWeights(null, null))
                  CausalConv1d("c", NodeId 0, 2, 3, true, ConvolutionWeights(null, null))
                  Concat("concat", null) ]
            for node in nullWeights do
                refused (sprintf "%s with null fields" node.Name) (fun d -> d.NodePath = node.Name && d.Problem.StartsWith "missing")
                    (fun () -> Graph.Create([ x; node ], [ NodeId 1 ])) |> ignore
            refused "null weights through a builder" (problemAt "missing weight" "p")
                (fun () -> Model.Input("x", 2).Projection(2, name = "p", weights = ProjectionWeights(null, null)).Build()) |> ignore
            let g = Graph.Create([ x; p ], [ NodeId 1 ])
            refused "an id past the end of a graph" (fun d -> d.Problem = "unknown node") (fun () -> g.[NodeId 9]) |> ignore
            refused "Named after From" (problemAt "misplaced rename" "x") (fun () -> Model.Input("x", 2).Projection(2).From("x").Named("y")) |> ignore

        testCase "empty sequences: T = 0 and batch 0 give empty outputs [batch, 0, width] and [0, time, width] in every mode and in the step form" <| fun () ->
            for name, g in fixedGraphs () |> List.map (fun (n, g) -> n, InitializeWeights.Run(g, 1)) do
                for batch, time in [ (2L, 0L); (0L, 3L); (0L, 0L) ] do
                    let xs = g.InputNodes |> Seq.map (fun i -> torch.zeros(batch, time, int64 i.Features)) |> Array.ofSeq
                    let expected = g.Outputs |> Seq.map (fun o -> [| batch; time; int64 (g.WidthOf o) |]) |> List.ofSeq
                    let shapes (ys: torch.Tensor[]) = ys |> Array.map (fun y -> y.shape) |> List.ofArray
                    for mode in modes do
                        let model = g.Compile(CompileOptions(Execution = mode))
                        Expect.equal (shapes (model.Forward(xs))) expected (sprintf "%s, %A, batch %d, time %d" name mode batch time)
                        if causal g then
                            Expect.equal (shapes (model.ToStepForm().Unroll(xs))) expected (sprintf "%s, step form, batch %d, time %d" name batch time)

        testCase "warnings: |lambda| > 1 builds with a warning that Summary shows" <| fun () ->
            let g = Model.Input("x", 3).LinearRecurrence([| 0.5; 1.05; -1.01 |], name = "memory").Build()
            Expect.equal g.Warnings.Count 1 "one warning"
            let w = g.Warnings.[0]
            Expect.equal (w.Severity, w.Problem, w.NodePath) (Severity.Warning, "unstable recurrence", "memory") "an unstable recurrence at 'memory'"
            Expect.stringContains w.Received "2 of 3 neurons" "the neuron count"
            Expect.stringContains w.Received "the largest 1.05" "the largest modulus"
            // ln(3.4028e38) / ln 1.05 = 1818.4
            Expect.stringContains w.Hint "1,819 steps" "the length at which a unit state overflows float32"
            Expect.stringContains (g.Summary()) (string w) "Summary shows it"
            Expect.stringContains (ParameterCounts.Summary g) "warning: unstable recurrence at 'memory'" "ParameterCounts.Summary too"
            let complex =
                Model.Input("x", 2).LinearRecurrence(state = StateKind.Complex, lambda = DoubleTensor.FromShape([| 2; 2 |], [| 0.6; 0.0; 0.9; 0.9 |])).Build()
            Expect.equal (complex.Warnings |> Seq.map (fun d -> d.Received) |> List.ofSeq) [ "1 of 2 neurons have |lambda| > 1, the largest 1.27279" ] "complex: the modulus"
            let stable = Model.Input("x", 2).LinearRecurrence([| 1.0; -1.0 |]).Build()
            Expect.isEmpty stable.Warnings "|lambda| = 1 is stable"
            Expect.isFalse ((stable.Summary()).Contains "warning") "no warning in the summary"
            match Duality.FSharp.Model.tryBuild (Model.Input("x", 3).LinearRecurrence([| 0.5; 1.05; -1.01 |], name = "memory")) with
            | Ok built -> Expect.equal (Duality.FSharp.Graph.warnings built) [ w ] "F#: tryBuild is Ok, and Graph.warnings has it"
            | Error problems -> failtestf "a warning stopped the build: %A" problems
            Expect.equal (g.WithNode(NodeId 0, Input("x", 3)).Warnings) g.Warnings "a graph made again warns again"

        testCase "names: a path of non-empty segments of letters, digits, '_' and '-'; any other is refused as invalid name" <| fun () ->
            for good in [ "a"; "block1/proj"; "a_2"; "_2"; "a-b/c_d/3"; "größe"; "x/0" ] do
                Model.Input("x", 2).Projection(2, name = good).Build() |> ignore
            for bad in [ "a//b"; "a/"; "/a"; "/"; "a.b"; "a b"; "a\tb"; "a\nb"; "a\u0001"; "\u0000"; "a\u200Bb"; "a:b"; "a+b"; "😀" ] do
                refused (sprintf "%A" bad) (problemAt "invalid name" bad) (fun () -> Model.Input("x", 2).Projection(2, name = bad).Build()) |> ignore
                refused (sprintf "%A as an input" bad) (problemAt "invalid name" bad) (fun () -> Graph.Create([ Input(bad, 2) :> Node ], [ NodeId 0 ])) |> ignore
            for missing in [ null; ""; "  " ] do
                refused (sprintf "%A" missing) (fun d -> d.Problem = "missing name") (fun () -> Model.Input(missing, 2).Build()) |> ignore
            refused "a scope without a name" (fun d -> d.Problem = "missing name") (fun () -> Model.Input("x", 2).Scope(null, fun (b: SequenceBuilder) -> b.Projection(2))) |> ignore

        testCase "naming: default names are the first free of kind, kind_2, ..., as the plain search gives, under renames, scopes and explicit names" <| fun () ->
            let random = Random(17)
            for _ in 1 .. 300 do
                let mutable b = Model.Input("x", 2)
                for _ in 1 .. random.Next(1, 25) do
                    let names = b.Nodes |> Seq.map (fun n -> n.Name) |> List.ofSeq
                    match random.Next 6 with
                    | 0 | 1 ->
                        let expected = plainDefault names "projection"
                        b <- b.Projection(2)
                        Expect.equal b.CurrentName expected (sprintf "after %A" names)
                    | 2 -> b <- b.Projection(2, name = pick random [| "projection"; "projection_2"; "projection_4"; "projection_3/x"; "projection/y"; "p" |])
                    | 3 -> b <- b.Projection(2).Named(pick random [| "projection_2"; "q"; "projection_5"; "projection_3/z" |])
                    | 4 -> b <- b.Scope("projection_2", fun (s: SequenceBuilder) -> s.Projection(2))
                    | _ ->
                        let expected = plainDefault names "projection"
                        b <- b.Projection(2).Named("r").From("x").Projection(2)
                        let names = names @ [ "r" ]
                        Expect.equal b.CurrentName (plainDefault names "projection") (sprintf "after a rename of %s, %A" expected names)

        testCase "naming: building 3,200 default-named projections is linear (time for 3,200 < 10 x time for 320 + 0.5 s)" <| fun () ->
            buildTime 320 |> ignore // warm up
            let small, large = buildTime 320, buildTime 3200
            Expect.isLessThan large (10.0 * small + 0.5) (sprintf "3,200 nodes in %.3f s, 320 in %.3f s" large small)
    ]
