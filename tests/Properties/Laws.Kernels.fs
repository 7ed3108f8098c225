/// Laws of the fast paths: fused kernels compute what the plain TorchSharp operations compute,
/// forward and backward, at sizes around the SIMD width and the work-block boundary.
module Duality.Properties.LawsKernels

#nowarn "9" // reading a tensor's data address, to see which memory block holds it

open FSharp.NativeInterop
open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Testing.Sequences
open Duality.Properties.Support

/// How the output is reduced to the loss, which decides the layout of the gradient reaching the scan:
/// 0 weighted by a probe (dense), 1 plain sum (a scalar expanded, stride 0 everywhere),
/// 2 channel sums weighted per (batch, step) (stride 0 along channels), 3 batch-and-time sums weighted per channel.
type Loss = Probe = 0 | Sum = 1 | StepWeights = 2 | ChannelWeights = 3

type RecurrenceCase =
    { Kind: int; Width: int; Batch: int; Time: int; WithState: bool; Seed: int; Loss: Loss }

let private recurrenceCase =
    gen {
        let! kind = Gen.choose (0, 5)
        let! width = Gen.elements [ 1; 2; 3; 4; 5; 7; 8; 9; 15; 16; 17; 33; 255; 256; 257; 300 ]
        let! batch = Gen.choose (1, 3)
        let! time = Gen.elements [ 1; 2; 3; 5; 17; 40 ]
        let! withState = Gen.elements [ true; false ]
        let! seed = Gen.choose (0, 100000)
        let! loss = Gen.elements [ Loss.Probe; Loss.Sum; Loss.StepWeights; Loss.ChannelWeights ]
        return { Kind = kind; Width = width; Batch = batch; Time = time; WithState = withState; Seed = seed; Loss = loss }
    }

/// kinds: 0 trainable real, 1 fixed real, 2 complex real part, 3 complex [re; im], 4 decay per neuron, 5 shared decay
let recurrenceGraph (c: RecurrenceCase) =
    let random = Random(c.Seed)
    let values n = Array.init n (fun _ -> random.NextDouble() * 1.8 - 0.9)
    let complex = c.Kind = 2 || c.Kind = 3
    let state =
        if not c.WithState then null
        elif complex then DoubleTensor.FromShape([| c.Width; 2 |], values (2 * c.Width))
        else DoubleTensor.Vector(values c.Width)
    let b = Model.Input("x", c.Width)
    let recurrence =
        match c.Kind with
        | 0 -> b.LinearRecurrence(initialState = state)
        | 1 -> b.LinearRecurrence(trainable = false, lambda = DoubleTensor.Vector(values c.Width), initialState = state)
        | 2 -> b.LinearRecurrence(state = StateKind.Complex, initialState = state)
        | 3 -> b.LinearRecurrence(state = StateKind.Complex, readout = ComplexReadout.RealAndImaginary, initialState = state)
        | 4 -> b.LinearRecurrence(decay = (fun d -> d.Projection(c.Width)), initialState = state)
        | _ -> b.LinearRecurrence(decay = (fun d -> d.Projection(1)), initialState = state)
    InitializeWeights.Run(recurrence.Build(), c.Seed)

let private weights (shape: int64[]) =
    torch.linspace(-1.0, 1.0, Array.fold (*) 1L shape, dtype = torch.ScalarType.Float64).reshape(shape)

let private reduce (loss: Loss) (y: torch.Tensor) =
    match loss with
    | Loss.Sum -> y.sum()
    | Loss.StepWeights -> (y.sum([| -1L |]) * weights y.shape.[0..1]).sum()
    | Loss.ChannelWeights -> (y.sum([| 0L; 1L |]) * weights [| y.shape.[2] |]).sum()
    | _ -> (y * weights y.shape).sum()

/// Output, input gradient and parameter gradients of a graph under one execution mode (float64).
let private gradients (loss: Loss) (g: Graph) (execution: ExecutionMode) (x: Sequence) =
    let model = g.Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = execution))
    let x = (x |> toTensor torch.ScalarType.Float64).requires_grad_(true)
    let y = model.forward(x)
    backwardOf (fun () -> reduce loss y)
    let grads = model.named_parameters() |> Seq.map (fun struct (n, p) -> n, ofTensorFlat p.grad) |> List.ofSeq
    ofTensor y, ofTensor x.grad, grads

let private run (g: Graph) execution (c: RecurrenceCase) =
    gradients c.Loss g execution (randomSequence (Random(c.Seed + 1)) c.Batch c.Time c.Width 1.0)

let private close (a: double[]) (b: double[]) =
    let scale = 1.0 + (Array.append a b |> Array.fold (fun m v -> max m (abs v)) 0.0)
    Array.length a = Array.length b && Array.forall2 (fun x y -> abs (x - y) <= 1e-10 * scale) a b

let config = { FsCheckConfig.defaultConfig with maxTest = 150 }

/// The default (fast) execution without gradients equals plain TorchSharp operations, in float64.
let private fastEqualsPlain (g: Graph) (x: Sequence) label =
    let x = x |> toTensor torch.ScalarType.Float64
    let run execution = noGrad (fun () -> g.Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = execution)).forward(x) |> ofTensor)
    within 1e-10 (scaledError (run ExecutionMode.TorchOps) (run ExecutionMode.Auto)) label

/// A fast run and a plain one agree: outputs, input gradients (float64, <= 1e-10) and every parameter gradient.
let private sameRuns (yOps, dxOps, gradsOps) (yFast, dxFast, gradsFast) =
    within 1e-10 (scaledError yOps yFast) "outputs"
    && within 1e-10 (scaledError dxOps dxFast) "input gradients"
    && List.forall2 (fun (n1, a) (n2, b) -> n1 = n2 && (close a b || failwithf "gradient of %s differs" n1)) gradsOps gradsFast

/// A module's forward (float64) equals plain TorchSharp operations on the weights it holds now.
let private agreesWithItsWeights (model: Duality.Torch.CompiledGraph) (x: torch.Tensor) label =
    let expected = noGrad (fun () -> model.ToGraph().Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = ExecutionMode.TorchOps)).forward(x) |> ofTensor)
    let actual = noGrad (fun () -> model.forward(x) |> ofTensor)
    within 1e-10 (scaledError expected actual) label |> ignore

/// Widths around the fused kernel's block of 256 channels, every activation (those without a fused form too).
let private gatedCase =
    gen {
        let! c = recurrenceCase
        let! width = Gen.elements [ 1; 7; 8; 255; 256; 257; 600 ]
        let! activation = Gen.elements [ ActivationKind.Identity; ActivationKind.Sigmoid; ActivationKind.Tanh; ActivationKind.SiLU; ActivationKind.ReLU; ActivationKind.GELU ]
        let! fixedLambda = Gen.elements [ true; false ]
        let! biases = Gen.elements [ (true, true); (true, false); (false, true); (false, false) ]
        let! valueReadTwice = Gen.elements [ false; false; true ]
        return { c with Width = width; Batch = min c.Batch 2 }, activation, fixedLambda, biases, valueReadTwice
    }

/// value * f(gate) into a recurrence; the value projection optionally also read by the output (then it is neither
/// run by the fused group nor written over).
let private gatedGraph (c: RecurrenceCase, activation, fixedLambda, (valueBias, gateBias), valueReadTwice) =
    let b =
        Model.Input("x", 3).Gate((fun v -> v.Projection(c.Width, bias = valueBias, name = "value")),
                                 (fun g -> g.Projection(c.Width, bias = gateBias)), activation)
    let random = Random(c.Seed)
    let values n = Array.init n (fun _ -> random.NextDouble() * 1.8 - 0.9)
    let state = if c.WithState then DoubleTensor.Vector(values c.Width) else null
    let recurrence =
        if fixedLambda then b.LinearRecurrence(trainable = false, lambda = DoubleTensor.Vector(values c.Width), initialState = state)
        else b.LinearRecurrence(initialState = state)
    InitializeWeights.Run((if valueReadTwice then recurrence.Add("gate/value/value") else recurrence).Build(), c.Seed)

/// value * f(s gate) into a recurrence whose decay comes from the input, lambda_t = sigmoid(r d_t) or e^(r d_t): d its own
/// projection (per channel, or one per step shared by every channel) or the gate's projection itself (minGRU's
/// 1 - z = sigmoid(-z)), through log sigmoid for e^(r d) (so r d <= 0), or none (a trained lambda); s and r optional
/// Scales the fused group folds in. The gate's function is any of the gated case's, or RG-LRU's sqrt(1 - e^(2x)).
let private decayedCase =
    gen {
        let! c, activation, _, biases, _ = gatedCase
        // RG-LRU's gate sqrt(1 - e^(2x)) on a gate x <= 0 (log sigmoid, then a positive factor)
        let! activation = Gen.frequency [ 5, Gen.constant activation; 1, Gen.constant ActivationKind.DecayNormaliser ]
        let! exponential = Gen.elements [ false; true ]
        let! decaySource = Gen.elements [ "own"; "own, shared"; "gate"; "none" ]
        let! gateFactor = Gen.elements [ None; Some -1.0; Some 0.75 ]
        let gateFactor = if activation = ActivationKind.DecayNormaliser then Option.map abs gateFactor else gateFactor
        let! decayFactor = Gen.elements [ None; Some -1.0; Some 0.5 ]
        // the value itself gated (RG-LRU's x sigmoid(i)), by a function with a fused form or not
        let! valueGate = Gen.elements [ None; None; Some ActivationKind.Sigmoid; Some ActivationKind.SiLU; Some ActivationKind.GELU ]
        return c, activation, biases, exponential, decaySource, gateFactor, (if exponential then Option.map abs decayFactor else decayFactor), valueGate
    }

let private decayedGraph (c: RecurrenceCase, activation, (valueBias, gateBias), exponential, decaySource, gateFactor, decayFactor, valueGate) =
    let scaled factor name (b: SequenceBuilder) = match factor with Some (f: float) -> b.Scale(f, name = name) | None -> b
    let value (v: SequenceBuilder) =
        match valueGate with
        | Some kind -> v.Gate((fun a -> a.Projection(c.Width, bias = valueBias, name = "value")), (fun b -> b.Projection(c.Width, name = "w")), kind, name = "inner")
        | None -> v.Projection(c.Width, bias = valueBias, name = "value")
    let gated =
        Model.Input("x", 3).Gate(value,
                                 (fun g ->
                                    let z = g.Projection(c.Width, bias = gateBias, name = "z")
                                    (if activation = ActivationKind.DecayNormaliser then z.LogSigmoid(name = "log_z") else z) |> scaled gateFactor "factor"),
                                 activation, name = "gate")
    let decay (d: SequenceBuilder) =
        let raw =
            match decaySource with
            | "gate" -> d.From("gate/gate/z")
            | "own, shared" -> d.From("x").Projection(1, name = "d")
            | _ -> d.From("x").Projection(c.Width, name = "d")
        (if exponential then raw.LogSigmoid(name = "log") else raw) |> scaled decayFactor "factor"
    let random = Random(c.Seed)
    let state = if c.WithState then DoubleTensor.Vector(Array.init c.Width (fun _ -> random.NextDouble() * 1.8 - 0.9)) else null
    let recurrence =
        if decaySource = "none" then gated.LinearRecurrence(initialState = state, name = "h")
        else gated.LinearRecurrence(initialState = state, decay = decay, decayForm = (if exponential then DecayForm.Logarithm else DecayForm.Sigmoid), name = "h")
    InitializeWeights.Run(recurrence.Build(), c.Seed)

type AttentionCase = { Layer: Duality.Testing.Generators.AttentionLayer; Time: int }

let private attentionCase =
    gen {
        let! layer = Duality.Testing.Generators.attentionLayer
        let! time = Gen.elements [ 1; 63; 64; 65; 100; 128; 129; 200 ]
        return { Layer = { layer with Time = time; Batch = min layer.Batch 2 }; Time = time }
    }

let private runAttention (g: Graph) execution (l: Duality.Testing.Generators.AttentionLayer) =
    gradients Loss.Probe g execution (randomSequence (Random(l.Seed)) l.Batch l.Time l.Width 1.0)

/// The kernels' large outputs live in a shared pool, so this law runs alone.
let private pooledOutputs =
    testCase "large kernel outputs come from recycled blocks: a block returns when its tensor dies and is never shared by live tensors; values and accumulated gradients unchanged (float64, <= 1e-10)" <| fun () ->
        // [1, 64, 65536] float64 = 32 MiB: the size from which the kernels' outputs are pooled. Tensors other
        // laws left to the garbage collector are finalised first, so none returns a block while this one looks.
        GC.Collect()
        GC.WaitForPendingFinalizers()
        let c = { Kind = 0; Width = 65536; Batch = 1; Time = 64; WithState = true; Seed = 11; Loss = Loss.Probe }
        let g = recurrenceGraph c
        let model = g.Compile(CompileOptions.Float64)
        let x = randomSequence (Random(5)) 1 64 65536 1.0 |> toTensor torch.ScalarType.Float64
        let address (t: torch.Tensor) =
            let bytes = t.bytes
            use first = fixed &bytes.GetPinnableReference()
            NativePtr.toNativeInt first
        // run, free the result, run again: the second result lands in the first one's block (reading values makes
        // handles the garbage collector frees later, so only after this check)
        let reusesFreedBlock (run: unit -> torch.Tensor) what =
            let first = run ()
            let block = address first
            first.Dispose()
            let second = run ()
            if address second <> block then failwithf "%s: a freed block was not reused" what
            second
        let expected = noGrad (fun () -> ofTensor (g.Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = ExecutionMode.TorchOps)).forward(x)))
        noGrad (fun () ->
            let second = reusesFreedBlock (fun () -> model.forward(x)) "scan"
            let third = model.forward(x)
            if address third = address second then failwith "two live tensors share a block"
            within 1e-10 (scaledError expected (ofTensor second)) "reused block" |> ignore
            within 1e-10 (scaledError expected (ofTensor third)) "second block" |> ignore)
        // a projection's large output: the product written into a pooled block equals libtorch's linear
        let projection = InitializeWeights.Run(Model.Input("x", 8).Projection(65536).Build(), 3).Compile(CompileOptions.Float64)
        let weights = projection.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> dict
        let small = randomSequence (Random(6)) 1 64 8 1.0 |> toTensor torch.ScalarType.Float64
        noGrad (fun () ->
            let second = reusesFreedBlock (fun () -> projection.forward(small)) "projection"
            let linear = torch.nn.functional.linear(small, weights.["projection.weight"], weights.["projection.bias"])
            within 1e-12 (scaledError (ofTensor linear) (ofTensor second)) "pooled projection" |> ignore)
        // the input gradient (a pooled tensor handed to autograd) accumulates over two backward passes
        let leaf = x.detach().requires_grad_(true)
        let once = (model.forward(leaf) * 0.5).sum()
        once.backward()
        let single = ofTensor leaf.grad
        backwardOf (fun () -> (model.forward(leaf) * 0.5).sum())
        within 1e-10 (scaledError (single |> Array3D.map (fun v -> 2.0 * v)) (ofTensor leaf.grad)) "accumulated gradient" |> ignore

/// A norm of width w over an input of width w: 0 layer norm, 1 RMS norm, 2 group norm (centred), 3 group norm (RMS per
/// group), with its gain (and bias, where the norm has one) or without.
let private normGraph kind width groups affine =
    let x = Model.Input("x", width)
    match kind with
    | 0 -> x.LayerNorm(1e-5, affine).Build()
    | 1 -> x.RmsNorm(1e-6, affine).Build()
    | 2 -> x.GroupNorm(groups, 1e-5, affine, true).Build()
    | _ -> x.GroupNorm(groups, 1e-5, affine, false).Build()

/// A compiled graph's output, then its input's and its parameters' gradients of sum(y * probe), each as float64.
let private outputAndGradients (g: Graph) dtype mode (x: torch.Tensor) (probe: torch.Tensor) =
    let model = g.Compile(CompileOptions(DType = dtype, Execution = mode))
    withGrad (fun () ->
        let leaf = x.to_type(dtype).detach().requires_grad_(true)
        let y = model.Forward([| leaf |]).[0]
        backwardOf (fun () -> (y * probe.to_type(dtype)).sum())
        [ yield "output", y.detach().to_type(torch.ScalarType.Float64)
          yield "input", leaf.grad.to_type(torch.ScalarType.Float64)
          for struct (name, p) in model.named_parameters() -> name, p.grad.to_type(torch.ScalarType.Float64) ])

/// Float32 outputs and gradients against float64 (expected): each within floor of it, scaled, or within 10x the composite
/// form's own float32 error (libtorch32) where that alone exceeds the floor (sums that cancel, features that coincide).
let private agreeInFloat32 floor label (expected: (string * torch.Tensor) list) (libtorch32: (string * torch.Tensor) list) (forms: (string * torch.Tensor) list) =
    let relative (e: torch.Tensor) (a: torch.Tensor) = ((e - a).abs().max() / (1.0 + e.abs().max().item<float>())).item<float>()
    List.forall2 (fun ((name, e), (_, own)) (name', a) ->
        name = name' && within (max floor (10.0 * relative e own)) (relative e a) (sprintf "%s, %s" label name))
        (List.zip expected libtorch32) forms

let tests =
    testList "kernels" [
        testCase "the kernels' team runs on libtorch's OpenMP threads here, and on the thread pool where no libgomp is mapped: on either, every piece once (0 to 100 pieces, and 2,000 on more than one thread), a piece's own exception reaches the caller and the team runs again after it, a team started inside a piece completes" <| fun () ->
            let threads = torch.get_num_threads()
            try
                torch.set_num_threads 2
                Expect.isTrue (Kernels.KernelTeam.OnOpenMp || not (OperatingSystem.IsLinux())) "libtorch's libgomp found on Linux"
                for onThreadPool in [ false; true ] do
                    let team = if onThreadPool then "thread pool" else "OpenMP"
                    let run count (body: int -> unit) = Kernels.KernelTeam.For(count, Action<int> body, onThreadPool)
                    for count in [ 0 .. 100 ] do
                        let hits: int[] = Array.zeroCreate count
                        run count (fun i -> Threading.Interlocked.Increment(&hits.[i]) |> ignore)
                        Expect.isTrue (Array.forall ((=) 1) hits) (sprintf "%s: %d pieces, each once" team count)
                    // pieces that take a while: the second thread joins (the pieces wait up to 10 s for it, which a thread pool
                    // busy with other work, as under the stress run's parallel laws, may start late)
                    let members = Collections.Concurrent.ConcurrentDictionary<int, bool>()
                    let sums: float[] = Array.zeroCreate 2000
                    let waiting = Diagnostics.Stopwatch.StartNew()
                    run 2000 (fun i ->
                        members.TryAdd(Threading.Thread.CurrentThread.ManagedThreadId, true) |> ignore
                        while members.Count < 2 && waiting.Elapsed.TotalSeconds < 10.0 do Threading.Thread.Sleep 1
                        let mutable total = 0.0
                        for j in 1 .. 20000 do total <- total + sqrt (float (i + j))
                        sums.[i] <- total)
                    Expect.isTrue (sums |> Array.forall (fun v -> v > 0.0)) (sprintf "%s: every piece ran" team)
                    Expect.isGreaterThan members.Count 1 (sprintf "%s: more than one thread took pieces" team)
                    let error = Expect.throwsC (fun () -> run 50 (fun i -> if i = 17 then invalidOp "piece 17")) id
                    Expect.equal (error.GetType(), error.Message) (typeof<InvalidOperationException>, "piece 17") (sprintf "%s: the piece's own exception" team)
                    let nested: int[] = Array.zeroCreate 12
                    run 3 (fun i -> run 4 (fun j -> nested.[4 * i + j] <- nested.[4 * i + j] + 1))
                    Expect.isTrue (Array.forall ((=) 1) nested) (sprintf "%s: pieces of teams started inside pieces, each once" team)
            finally
                torch.set_num_threads threads

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 60 }
            "fused norms (layer, RMS, group centred or not; with and without gain and bias) = the composite form: outputs and gradients of the input, gain and bias, at widths around the SIMD width and on both sides of the parallel threshold (float64 1e-10; float32 within 1e-3 of it, scaled, or within 10x the composite form's own float32 error where that exceeds 1e-4: in groups of two features whose values nearly coincide dx cancels, and the composite form in float32 errs by up to 2.4e-3 there)" <|
            Prop.forAll
                (Arb.fromGen
                    (gen {
                        let! kind = Gen.choose (0, 3)
                        let! width = Gen.elements [ 1; 2; 3; 7; 8; 9; 16; 17; 24; 64; 255; 256; 257 ]
                        let divisors = [ for d in 1 .. width do if width % d = 0 then yield d ]
                        let! groups = if kind >= 2 then Gen.elements divisors else Gen.constant 1
                        let! affine = Gen.elements [ true; false ]
                        let! batch = Gen.choose (1, 3)
                        // rows x width from a few elements to beyond RowRanges.ParallelWork (2^16)
                        let! time = Gen.frequency [ 3, Gen.choose (1, 9); 1, Gen.choose (250, 300) ]
                        let! seed = Gen.choose (0, 100000)
                        return kind, width, groups, affine, batch, time, seed }))
                (fun (kind, width, groups, affine, batch, time, seed) ->
                    let g = InitializeWeights.Run(normGraph kind width groups affine, seed, WeightInit.Perturbed)
                    use generator = new torch.Generator(uint64 seed)
                    // an offset and a scale per draw, so centring has work to do
                    let x = torch.randn([| int64 batch; int64 time; int64 width |], dtype = torch.ScalarType.Float64, generator = generator) * 3.0 + 5.0
                    let probe = torch.randn([| int64 batch; int64 time; int64 width |], dtype = torch.ScalarType.Float64, generator = generator)
                    let composite = outputAndGradients g torch.ScalarType.Float64 ExecutionMode.TorchOps x probe
                    let relative (e: torch.Tensor) (a: torch.Tensor) = ((e - a).abs().max() / (1.0 + e.abs().max().item<float>())).item<float>()
                    let agree tolerance label forms =
                        List.forall2 (fun (name, e) (name', a) -> name = name' && within tolerance (relative e a) (sprintf "%s, %s" label name)) composite forms
                    // float32: within 1e-3, or within 10x the composite form's own float32 error where that alone exceeds it
                    // (two features whose values nearly coincide: dx cancels to float32's rounding of 1 / sigma in both)
                    agree 1e-10 "Auto" (outputAndGradients g torch.ScalarType.Float64 ExecutionMode.Auto x probe)
                    && agree 1e-10 "PerNode" (outputAndGradients g torch.ScalarType.Float64 ExecutionMode.PerNode x probe)
                    && agreeInFloat32 1e-3 "Auto, float32" composite (outputAndGradients g torch.ScalarType.Float32 ExecutionMode.TorchOps x probe)
                        (outputAndGradients g torch.ScalarType.Float32 ExecutionMode.Auto x probe))

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 60 }
            "fused gate (value * f(gate), every activation the fused kernels compute) = the composite form: outputs and gradients of the input and the gate's projection, at widths around the SIMD width (a padded last vector) and on both sides of the parallel threshold (float64 1e-10; float32 within 1e-5 of it, scaled, or within 10x the composite form's own float32 error where that exceeds 1e-6: a width-1 gate's weight gradient sums 900 products that cancel)" <|
            Prop.forAll
                (Arb.fromGen
                    (gen {
                        let! kind = Gen.elements [ ActivationKind.Identity; ActivationKind.Sigmoid; ActivationKind.Tanh; ActivationKind.SiLU
                                                   ActivationKind.ReLU; ActivationKind.DecayNormaliser ]
                        let! width = Gen.elements [ 1; 3; 7; 8; 9; 17; 64; 257 ]
                        let! batch = Gen.choose (1, 3)
                        // elements from a few to beyond GateProduct.ParallelWork (2^16)
                        let! time = Gen.frequency [ 3, Gen.choose (1, 9); 1, Gen.choose (260, 300) ]
                        let! seed = Gen.choose (0, 100000)
                        return kind, width, batch, time, seed }))
                (fun (kind, width, batch, time, seed) ->
                    // the decay normaliser's gate is a log-decay, at most 0
                    let gate: System.Func<SequenceBuilder, SequenceBuilder> =
                        if kind = ActivationKind.DecayNormaliser then System.Func<_, _>(fun g -> g.Projection(width).LogSigmoid())
                        else System.Func<_, _>(fun g -> g.Projection(width))
                    let g = InitializeWeights.Run(Model.Input("x", width).Gate(gate, kind).Build(), seed, WeightInit.Perturbed)
                    use generator = new torch.Generator(uint64 seed)
                    let x = torch.randn([| int64 batch; int64 time; int64 width |], dtype = torch.ScalarType.Float64, generator = generator) * 3.0
                    let probe = torch.randn([| int64 batch; int64 time; int64 width |], dtype = torch.ScalarType.Float64, generator = generator)
                    let composite = outputAndGradients g torch.ScalarType.Float64 ExecutionMode.TorchOps x probe
                    let relative (e: torch.Tensor) (a: torch.Tensor) = ((e - a).abs().max() / (1.0 + e.abs().max().item<float>())).item<float>()
                    let agree tolerance label forms =
                        List.forall2 (fun (name, e) (name', a) -> name = name' && within tolerance (relative e a) (sprintf "%A, %s, %s" kind label name)) composite forms
                    agree 1e-10 "Auto" (outputAndGradients g torch.ScalarType.Float64 ExecutionMode.Auto x probe)
                    && agreeInFloat32 1e-5 (sprintf "%A, Auto, float32" kind) composite
                        (outputAndGradients g torch.ScalarType.Float32 ExecutionMode.TorchOps x probe)
                        (outputAndGradients g torch.ScalarType.Float32 ExecutionMode.Auto x probe))

        testCase "the fused kernels' tanh and its slope keep full relative precision in float32 and float64, from 1e-30 to 40 either side (within 1e-6 and 1e-14 of tanh x and 1 / cosh^2 x): tanh |x| = -(e^(-2|x|) - 1) / (1 + e^(-2|x|)) and 1 - tanh^2 = 4 e^(-2|x|) / (1 + e^(-2|x|))^2, where 2 sigmoid(2x) - 1 and 1 - tanh^2 cancel" <| fun () ->
            let points = [ 1e-30; 1e-7; 1e-3; 0.1; 0.17; 0.18; 0.34; 0.35; 1.0; 5.0; 20.0; 40.0 ] |> List.collect (fun x -> [ x; -x ])
            let check (precision: float) (activate: float -> float * float) =
                for x in points do
                    let (value, slope) = activate x
                    let expected = Math.Tanh x
                    let expectedSlope = 1.0 / (Math.Cosh x * Math.Cosh x)
                    Expect.isLessThanOrEqual (abs (value - expected) / abs expected) precision (sprintf "tanh %g = %g, not %g" x value expected)
                    Expect.isLessThanOrEqual (abs (slope - expectedSlope) / expectedSlope) precision (sprintf "slope at %g = %g, not %g" x slope expectedSlope)
            check 1e-6 (fun x ->
                let mutable slope = Numerics.Vector<float32>.Zero
                let value = Duality.Kernels.GatedScan.ActivateWithSlope(ActivationKind.Tanh, Numerics.Vector<float32>(float32 x), &slope)
                float value.[0], float slope.[0])
            check 1e-14 (fun x ->
                let mutable slope = Numerics.Vector<float>.Zero
                let value = Duality.Kernels.GatedScan.ActivateWithSlope(ActivationKind.Tanh, Numerics.Vector<float>(x), &slope)
                value.[0], slope.[0])

        testCase "the fused tanh gate in float32 is as accurate as the composite form where its weight and bias gradients sum products that cancel (width 1, 3 x 276 steps): every output and gradient within 2x the composite form's float32 error of float64, or 1e-6 (with tanh as 2 sigmoid(2x) - 1 the bias gradient was 14x)" <| fun () ->
            for seed in [ 75602; 1; 2; 3 ] do
                let gate: System.Func<SequenceBuilder, SequenceBuilder> = System.Func<_, _>(fun g -> g.Projection(1))
                let g = InitializeWeights.Run(Model.Input("x", 1).Gate(gate, ActivationKind.Tanh).Build(), seed, WeightInit.Perturbed)
                use generator = new torch.Generator(uint64 seed)
                let x = torch.randn([| 3L; 276L; 1L |], dtype = torch.ScalarType.Float64, generator = generator) * 3.0
                let probe = torch.randn([| 3L; 276L; 1L |], dtype = torch.ScalarType.Float64, generator = generator)
                let expected = outputAndGradients g torch.ScalarType.Float64 ExecutionMode.TorchOps x probe
                let composite = outputAndGradients g torch.ScalarType.Float32 ExecutionMode.TorchOps x probe
                let fused = outputAndGradients g torch.ScalarType.Float32 ExecutionMode.Auto x probe
                let relative (e: torch.Tensor) (a: torch.Tensor) = ((e - a).abs().max() / (1.0 + e.abs().max().item<float>())).item<float>()
                for ((name, e), (_, c), (_, f)) in List.zip3 expected composite fused do
                    Expect.isLessThanOrEqual (relative e f) (max 1e-6 (2.0 * relative e c)) (sprintf "seed %d, %s: fused %.3e, composite %.3e" seed name (relative e f) (relative e c))

        testCase "fused norms over no steps or no batch rows: empty outputs and gradients" <| fun () ->
            for kind in 0 .. 3 do
                let g = InitializeWeights.Run(normGraph kind 4 2 true, 1)
                for shape in [ [| 2L; 0L; 4L |]; [| 0L; 3L; 4L |] ] do
                    let x = torch.zeros(shape, dtype = torch.ScalarType.Float64)
                    for name, value in outputAndGradients g torch.ScalarType.Float64 ExecutionMode.Auto x (torch.zeros(shape, dtype = torch.ScalarType.Float64)) do
                        if name = "output" || name = "input" then Expect.sequenceEqual value.shape shape (sprintf "kind %d, %s, %A" kind name shape)

        testPropertyWithConfig config "fused scan = TorchSharp step loop: outputs, input and parameter gradients (float64, scaled error <= 1e-10)" <|
            Prop.forAll (Arb.fromGen recurrenceCase) (fun c ->
                let g = recurrenceGraph c
                sameRuns (run g ExecutionMode.TorchOps c) (run g ExecutionMode.Auto c))

        testCase "fused scan = TorchSharp step loop on sequences large enough for streaming stores (float64, <= 1e-10)" <| fun () ->
            for kind, loss in [ 0, Loss.Probe; 0, Loss.Sum; 1, Loss.StepWeights ] do
                let c = { Kind = kind; Width = 32768; Batch = 1; Time = 64; WithState = true; Seed = 7 + kind; Loss = loss }
                let g = recurrenceGraph c
                let yFused, dxFused, gradsFused = run g ExecutionMode.Auto c
                let yOps, dxOps, gradsOps = run g ExecutionMode.TorchOps c
                within 1e-10 (scaledError yOps yFused) "outputs" |> ignore
                within 1e-10 (scaledError dxOps dxFused) "input gradients" |> ignore
                List.iter2 (fun (n1, a) (n2, b) -> if n1 <> n2 || not (close a b) then failwithf "gradient of %s differs" n1) gradsOps gradsFused

        testPropertyWithConfig config "fused causal convolution = TorchSharp conv1d: outputs, input and parameter gradients (float64, scaled error <= 1e-10), every loss, widths around SIMD vectors, taps beyond the sequence" <|
            Prop.forAll (Arb.fromGen (Gen.zip3 recurrenceCase (Gen.elements [ 1; 3; 4; 8; 9; 33 ]) (Gen.elements [ 1; 2; 4; 7 ]))) (fun (c, width, kernel) ->
                let c = { c with Width = width }
                let g = InitializeWeights.Run(Model.Input("x", width).CausalConv1d(kernel, bias = (c.Seed % 2 = 0), name = "conv").Build(), c.Seed)
                sameRuns (run g ExecutionMode.TorchOps c) (run g ExecutionMode.Auto c))

        testCase "fused causal convolution: a NaN or infinite entry of the input reaches only the outputs whose taps read it, as the reference computes them, and one of the output's gradient only the input gradients that read it (kernels of 1 to 7 taps, float64)" <| fun () ->
            let (time, width, step, channel) = (12, 8, 5, 3)
            for kernel in [ 1; 2; 3; 4; 7 ] do
                for bad in [ nan; infinity ] do
                    let g = InitializeWeights.Run(Model.Input("x", width).CausalConv1d(kernel, name = "conv").Build(), kernel)
                    let model = g.Compile(CompileOptions(DType = torch.ScalarType.Float64))
                    let label = sprintf "%d taps, %g at step %d" kernel bad step
                    let x = randomSequence (Random(kernel)) 2 time width 1.0
                    x.[1, step, channel] <- bad
                    let expected: Sequence = (Duality.Reference.ReferenceEvaluator.Evaluate(g, [| x |])).[0]
                    let y = noGrad (fun () -> ofTensor (model.forward(toTensor torch.ScalarType.Float64 x)))
                    y |> Array3D.iteri (fun b t c v ->
                        let e = expected.[b, t, c]
                        if Double.IsFinite e <> Double.IsFinite v || (Double.IsFinite e && abs (e - v) > 1e-10 * (1.0 + abs e)) then
                            failwithf "%s: output [%d, %d, %d] %g, the reference %g" label b t c v e)
                    // dx_s reads dy_(s+i) for i < taps
                    let input = (toTensor torch.ScalarType.Float64 (randomSequence (Random(kernel)) 2 time width 1.0)).requires_grad_(true)
                    let dy = randomSequence (Random(kernel + 1)) 2 time width 1.0
                    dy.[1, step, channel] <- bad
                    torch.autograd.backward([| model.forward(input) |], [| toTensor torch.ScalarType.Float64 dy |])
                    ofTensor input.grad |> Array3D.iteri (fun b s c v ->
                        let reads = b = 1 && c = channel && s <= step && s > step - kernel
                        if Double.IsFinite v = reads then failwithf "%s: input gradient [%d, %d, %d] %g" label b s c v)

        testPropertyWithConfig { config with maxTest = 60 } "chunked causal linear attention = masked form: outputs, input and parameter gradients (float64, <= 1e-10)" <|
            Prop.forAll (Arb.fromGen attentionCase) (fun c ->
                let g = Duality.Testing.Generators.attentionGraph c.Layer
                sameRuns (runAttention g ExecutionMode.TorchOps c.Layer) (runAttention g ExecutionMode.Auto c.Layer))

        testPropertyWithConfig { config with maxTest = 60 } "fused gate + recurrence (no gradients) = node-by-node execution (float64, scaled error <= 1e-10), with the projections' biases added in the pass" <|
            Prop.forAll (Arb.fromGen gatedCase) (fun case ->
                let c, _, _, _, _ = case
                fastEqualsPlain (gatedGraph case) (randomSequence (Random(c.Seed)) c.Batch c.Time 3 1.5) "fused vs node by node")

        testPropertyWithConfig { config with maxTest = 60 } "fused gate + recurrence with gradients = node-by-node execution: outputs, input and parameter gradients (float64, scaled error <= 1e-10)" <|
            Prop.forAll (Arb.fromGen gatedCase) (fun case ->
                let c, _, _, _, _ = case
                let g = gatedGraph case
                let x () = randomSequence (Random(c.Seed)) c.Batch c.Time 3 1.5
                sameRuns (gradients c.Loss g ExecutionMode.TorchOps (x ())) (gradients c.Loss g ExecutionMode.Auto (x ())))

        testPropertyWithConfig { config with maxTest = 60 } "complex recurrence with a real or a complex input (the LRU's), normalised or not, with an initial state or not, read as [re; im] or its real part: the one-pass scan (no gradients) = node-by-node execution (float64, scaled error <= 1e-10), and with gradients too" <|
            Prop.forAll (Arb.fromGen (Gen.zip3 recurrenceCase (Gen.zip (Gen.elements [ 1; 3; 4; 5; 8; 9; 255; 256; 257; 600 ]) (Gen.elements [ true; false ]))
                                                 (Gen.zip (Gen.elements [ true; false ]) (Gen.elements [ ComplexReadout.RealAndImaginary; ComplexReadout.RealPart ]))))
                (fun (c, (width, complexInput), (normalised, readout)) ->
                let random = Random(c.Seed)
                // |lambda| in [0.5, 0.99] so the normalisation is real; phases in [0, pi/4]
                let lambda = Array2D.init width 2 (fun _ _ -> 0.0)
                for n in 0 .. width - 1 do
                    let r, theta = 0.5 + 0.49 * random.NextDouble(), random.NextDouble() * Math.PI / 4.0
                    lambda.[n, 0] <- r * cos theta
                    lambda.[n, 1] <- r * sin theta
                let state = if c.WithState then DoubleTensor.Matrix(Array2D.init width 2 (fun _ _ -> random.NextDouble() - 0.5)) else null
                let g =
                    InitializeWeights.Run(
                        Model.Input("x", 3).Projection((if complexInput then 2 * width else width), bias = false)
                            .LinearRecurrence(width, state = StateKind.Complex, readout = readout, complexInput = complexInput, normalisedInput = normalised,
                                              lambda = DoubleTensor.Matrix(lambda), initialState = state).Build(), c.Seed)
                fastEqualsPlain g (randomSequence (Random(c.Seed)) c.Batch c.Time 3 1.5) "one pass vs node by node"
                && sameRuns (gradients c.Loss g ExecutionMode.TorchOps (randomSequence (Random(c.Seed)) c.Batch c.Time 3 1.5))
                            (gradients c.Loss g ExecutionMode.Auto (randomSequence (Random(c.Seed)) c.Batch c.Time 3 1.5)))

        testCase "VectorExp.ExpMinusOne: e^x - 1 within 4 ulps in float64 (2e-7 in float32) of its value, from |x| = 1e-300 through both sides of ln 2 / 2 up to the ends of the range" <| fun () ->
            // the reference: e^x - 1 by its Taylor series in decimal (28 digits) for 1e-10 <= |x| < 1, e^x - 1 in double beyond (no digit cancels there)
            let reference (x: float) =
                if abs x >= 1.0 then exp x - 1.0
                // below decimal's range: x + x^2 / 2, wrong by x^3 / 6 (relative 1e-20 at most)
                elif abs x < 1e-10 then x + x * x / 2.0
                else
                    let xd = decimal x
                    let mutable term, sum, n = xd, xd, 1m
                    while term <> 0m do
                        n <- n + 1m
                        term <- term * xd / n
                        sum <- sum + term
                    float sum
            let magnitudes = [ 1e-300; 1e-30; 1e-12; 1e-6; 1e-3; 0.1; 0.3; 0.34; 0.3465; 0.3466; 0.35; 0.5; 0.9; 1.5; 10.0; 80.0; 700.0 ]
            for x in magnitudes @ List.map (fun m -> -m) magnitudes do
                let expected = reference x
                let actual = (Duality.Kernels.VectorExp.ExpMinusOne(System.Numerics.Vector<float>(x))).[0]
                Expect.isLessThanOrEqual (abs (actual - expected)) (4.0 * Double.Epsilon + 8.9e-16 * abs expected) (sprintf "float64 at x = %g" x)
                if abs x < 80.0 then
                    let single = (Duality.Kernels.VectorExp.ExpMinusOne(System.Numerics.Vector<float32>(float32 x))).[0]
                    let expectedSingle = reference (float (float32 x))
                    Expect.isLessThanOrEqual (abs (float single - expectedSingle)) (1e-44 + 2e-7 * abs expectedSingle) (sprintf "float32 at x = %g" x)

        testPropertyWithConfig { config with maxTest = 80 } "fused gate + recurrence with an input-dependent decay (sigmoid or e^, per channel or shared, folded Scales, biases added in the pass, RG-LRU's normalising gate among the gate's functions, the value itself gated) = node-by-node execution: outputs, input and parameter gradients (float64, scaled error <= 1e-10); the group runs fused whenever the gate's function has a fused form, with gradients too unless the decay is shared" <|
            Prop.forAll (Arb.fromGen decayedCase) (fun case ->
                let c, activation, _, _, decaySource, _, _, valueGate = case
                let g = decayedGraph case
                let x () = randomSequence (Random(c.Seed)) c.Batch c.Time 3 1.5 |> toTensor torch.ScalarType.Float64
                let model = g.Compile(CompileOptions.Float64)
                let recurrenceGroups () = model.FusedGroups |> Seq.filter (fun group -> group.Kind.StartsWith "gate + recurrence")
                let fusedRuns () = recurrenceGroups () |> Seq.sumBy (fun group -> group.Fused)
                let actual = noGrad (fun () -> model.forward(x ()) |> ofTensor)
                let expected = noGrad (fun () -> g.Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = ExecutionMode.TorchOps)).forward(x ()) |> ofTensor)
                let supported = activation <> ActivationKind.GELU
                let valueGateFused = supported && valueGate <> None && valueGate <> Some ActivationKind.GELU
                let groupNodes = recurrenceGroups () |> Seq.sumBy (fun group -> group.Nodes.Count)
                if supported && valueGateFused <> (recurrenceGroups () |> Seq.exists (fun group -> group.Nodes |> Seq.exists (fun n -> n = "gate/value/inner"))) then
                    failwithf "the value's gate %A is %sin the group (%d nodes)" valueGate (if valueGateFused then "not " else "") groupNodes
                if fusedRuns () <> (if supported then 1L else 0L) then failwithf "without gradients the fused group ran %d times (%A)" (fusedRuns ()) activation
                backwardOf (fun () -> model.forward(x().requires_grad_(true)).sum())
                let withGradients = if supported && (decaySource <> "own, shared" || c.Width = 1) then 2L else if supported then 1L else 0L
                if fusedRuns () <> withGradients then failwithf "with gradients the fused group ran %d times in all (%A, %s)" (fusedRuns ()) activation decaySource
                let sequence () = randomSequence (Random(c.Seed)) c.Batch c.Time 3 1.5
                within 1e-10 (scaledError expected actual) "fused vs node by node"
                && sameRuns (gradients c.Loss g ExecutionMode.TorchOps (sequence ())) (gradients c.Loss g ExecutionMode.Auto (sequence ())))

        testPropertyWithConfig { config with maxTest = 60 } "kept buffers (ReuseBuffers): repeated forwards equal forwards without (float64, <= 1e-12), and earlier outputs stay intact, whichever node reads the state (views: slices, identities, one-part concats)" <|
            Prop.forAll (Arb.fromGen (Gen.zip3 gatedCase (Gen.elements [ "gated"; "gated decay"; "plain"; "decay"; "attention"; "lowered"; "compressed" ])
                                                    (Gen.elements [ "readout"; "output"; "slice"; "identity"; "twice"; "concat"; "projected concat" ])))
                (fun (case, family, ending) ->
                let c, activation, _, (valueBias, gateBias), _ = case
                let x0 = Model.Input("x", 3)
                let b =
                    match family with
                    | "gated" ->
                        x0.Gate((fun v -> v.Projection(c.Width, bias = valueBias)), (fun g -> g.Projection(c.Width, bias = gateBias)), activation)
                            .LinearRecurrence(name = "memory")
                    | "gated decay" ->
                        x0.Gate((fun v -> v.Projection(c.Width, bias = valueBias)), (fun g -> g.Projection(c.Width, bias = gateBias, name = "z")), activation)
                            .LinearRecurrence(decay = (fun d -> d.From("gate/gate/z").Scale(-1.0)), name = "memory")
                    | "plain" -> x0.Projection(c.Width, bias = valueBias).LinearRecurrence(name = "memory")
                    | "decay" -> x0.Projection(c.Width, bias = valueBias).LinearRecurrence(decay = (fun d -> d.Projection(c.Width)), name = "memory")
                    // attention, as a node and lowered (structure-aware, and as the attention the compressed form raises to)
                    | _ -> x0.Attention(2, 3, 2, outFeatures = (if valueBias then Nullable c.Width else Nullable()), decay = Nullable 0.9, name = "a")
                let width = match family with "gated" | "gated decay" | "plain" | "decay" -> c.Width | _ -> if valueBias then c.Width else 2 * 2
                let b =
                    match ending with
                    | "readout" -> b.Projection(2, bias = gateBias)
                    | "slice" -> b.Slice(0, max 1 (width / 2))
                    | "identity" -> b.Activation(ActivationKind.Identity)
                    | "twice" -> b.Projection(2).Add(fun m -> m.Projection(2))
                    // a one-part concat returns its part as an alias: the part must not live in a kept buffer
                    | "concat" -> b.Concat("joined", (fun (p: SequenceBuilder) -> p))
                    | "projected concat" -> b.Projection(8, name = "p").Concat("joined", (fun (p: SequenceBuilder) -> p))
                    | _ -> b
                let g =
                    let g = InitializeWeights.Run(b.Build(), c.Seed)
                    match family with
                    | "lowered" -> LowerAttention.ToGatedRnn(g, Construction.Full)
                    | "compressed" -> LowerAttention.ToGatedRnn(g, Construction.Compressed)
                    | _ -> g
                let options reuse = CompileOptions(DType = torch.ScalarType.Float64, ReuseBuffers = reuse)
                let kept, fresh = g.Compile(options true), g.Compile(options false)
                let x time seed = randomSequence (Random(seed)) c.Batch time 3 1.5 |> toTensor torch.ScalarType.Float64
                noGrad (fun () ->
                    let x1, x2, x3 = x c.Time c.Seed, x c.Time (c.Seed + 1), x (c.Time + 3) (c.Seed + 2)
                    let y1 = kept.forward(x1)
                    let first = ofTensor y1
                    let y2, y3 = ofTensor (kept.forward(x2)), ofTensor (kept.forward(x3))
                    kept.ReleaseBuffers()
                    let y4 = ofTensor (kept.forward(x2))
                    within 0.0 (scaledError first (ofTensor y1)) "first output after later calls"
                    && within 1e-12 (scaledError first (ofTensor (fresh.forward(x1)))) "first call"
                    && within 1e-12 (scaledError (ofTensor (fresh.forward(x2))) y2) "second call"
                    && within 1e-12 (scaledError (ofTensor (fresh.forward(x3))) y3) "longer sequence"
                    && within 0.0 (scaledError y2 y4) "after releasing the buffers"))

        testCase "kept buffers (ReuseBuffers): concurrent forwards from several threads each equal a forward without (float64, <= 1e-12)" <| fun () ->
            let g =
                InitializeWeights.Run(
                    Model.Input("x", 16).Gate((fun v -> v.Projection(256)), (fun g -> g.Projection(256)), ActivationKind.Sigmoid)
                        .LinearRecurrence().Projection(8).Build(), 3)
            let kept = g.Compile(CompileOptions(DType = torch.ScalarType.Float64, ReuseBuffers = true))
            let fresh = g.Compile(CompileOptions.Float64)
            let inputs = Array.init 4 (fun i -> randomSequence (Random(i)) 2 300 16 1.0 |> toTensor torch.ScalarType.Float64)
            let expected = inputs |> Array.map (fun x -> noGrad (fun () -> ofTensor (fresh.forward(x))))
            use start = new System.Threading.Barrier(inputs.Length)
            let results = Array.zeroCreate inputs.Length
            let threads =
                inputs |> Array.mapi (fun i x ->
                    System.Threading.Thread(fun () ->
                        use _ = torch.no_grad()
                        start.SignalAndWait()
                        results.[i] <- Array.init 15 (fun _ -> ofTensor (kept.forward(x)))))
            threads |> Array.iter (fun t -> t.Start())
            threads |> Array.iter (fun t -> t.Join())
            for i in 0 .. inputs.Length - 1 do
                for y in results.[i] do
                    within 1e-12 (scaledError expected.[i] y) "concurrent call" |> ignore

        testSequenced pooledOutputs

        testPropertyWithConfig { config with maxTest = 60 } "fused recurrent attention (no gradients) = masked form (float64, scaled error <= 1e-10)" <|
            Prop.forAll (Arb.fromGen attentionCase) (fun c ->
                let l = c.Layer
                fastEqualsPlain (Duality.Testing.Generators.attentionGraph l) (randomSequence (Random(l.Seed)) l.Batch l.Time l.Width 1.0) "fused vs masked")

        testPropertyWithConfig { config with maxTest = 60 } "structure-aware execution of lowered layers (both constructions, every decay) = per-node kernels = plain operations (float64, <= 1e-10), also under the invariances" <|
            Prop.forAll (Arb.fromGen attentionCase) (fun c ->
                let l = c.Layer
                let attention = Duality.Testing.Generators.attentionGraph l
                let lowered = LowerAttention.ToGatedRnn(attention, Construction.Full)
                let gated = match l.Decay with Duality.Testing.Generators.AttentionDecay.Gated -> true | _ -> false
                let rotating = match l.Decay with Duality.Testing.Generators.AttentionDecay.Rotating _ -> true | _ -> false
                // the compressed construction runs as the attention it raises to
                let variants =
                    [ yield lowered
                      if l.FeatureMap = ActivationKind.Identity then
                          yield LowerAttention.ToGatedRnn(attention, Construction.Compressed)
                          if not gated && not rotating then yield LawsRaising.perturbed l.Seed lowered ]
                let x = randomSequence (Random(l.Seed)) l.Batch l.Time l.Width 1.0 |> toTensor torch.ScalarType.Float64
                variants |> List.forall (fun g ->
                    let run execution =
                        let model = g.Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = execution))
                        noGrad (fun () -> model.forward(x) |> ofTensor), List.ofSeq model.FusedGroups
                    let plain, _ = run ExecutionMode.TorchOps
                    let structured, groups = run ExecutionMode.Auto
                    if not (groups |> List.exists (fun group -> group.Kind.StartsWith "structure-aware" && group.Fused = 1L && group.NodeByNode = 0L)) then
                        failwithf "no structure-aware group ran fused: %A" groups
                    within 1e-10 (scaledError plain structured) "structure-aware vs node by node"
                    && within 1e-10 (scaledError plain (fst (run ExecutionMode.PerNode))) "per-node kernels vs plain"))

        testCase "structure-aware execution follows weight changes: rescaled gates, and gates that lose their structure" <| fun () ->
            let g = LowerAttention.ToGatedRnn(InitializeWeights.Run(Model.Input("x", 4).Attention(2, 3, 2, outFeatures = Nullable 4, name = "a").Build(), 3))
            let model = g.Compile(CompileOptions.Float64)
            let x = randomSequence (Random 5) 2 9 4 1.0 |> toTensor torch.ScalarType.Float64
            let check = agreesWithItsWeights model x
            check "as lowered"
            let outputValue = model.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = "a/output_value.weight" then Some p else None)
            noGrad (fun () -> outputValue.mul_(torch.tensor(1.5, dtype = torch.ScalarType.Float64)) |> ignore)
            check "after rescaling an output gate"
            noGrad (fun () -> outputValue.add_(torch.full_like(outputValue, 0.01)) |> ignore)
            check "after the output gate stops being a selection"

        testCase "structure-aware execution follows an input-dependent decay's weights, and counts fused and node-by-node passes" <| fun () ->
            let attention = Model.Input("x", 4).Attention(2, 3, 2, outFeatures = Nullable 4, name = "a", inputDependentDecay = true).Build()
            let model = LowerAttention.ToGatedRnn(InitializeWeights.Run(attention, 3)).Compile(CompileOptions.Float64)
            let x = randomSequence (Random 5) 2 9 4 1.0 |> toTensor torch.ScalarType.Float64
            let check = agreesWithItsWeights model x
            check "as lowered"
            let decay = model.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = "a/decay.weight" then Some p else None)
            noGrad (fun () -> decay.mul_(torch.tensor(-2.0, dtype = torch.ScalarType.Float64)) |> ignore)
            check "after changing the decay's weights"
            backwardOf (fun () -> model.forward(x).sum())
            let group = model.FusedGroups |> Seq.find (fun g -> g.Node = "a")
            Expect.equal (group.Kind, group.Fused, group.NodeByNode) ("structure-aware gated layer, input-dependent decay", 2L, 1L)
                "two passes without gradients fused, one with gradients node by node"

        testPropertyWithConfig config "fused scan = reference evaluator (float32 within 1e-5 scaled)" <|
            Prop.forAll (Arb.fromGen recurrenceCase) (fun c ->
                let g = recurrenceGraph c
                let x = randomSequence (Random(c.Seed + 1)) c.Batch c.Time c.Width 1.0
                let expected = Duality.Reference.ReferenceEvaluator.Evaluate(g, [| x |]).[0]
                let y = noGrad (fun () -> g.Compile().forward(toTensor torch.ScalarType.Float32 x) |> ofTensor)
                within 1e-5 (scaledError expected y) "float32 fused vs reference")
    ]
