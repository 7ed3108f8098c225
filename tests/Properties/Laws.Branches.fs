/// Laws that reach every branch: fast paths taken only above a size threshold run on both sides of it (the
/// threshold read from its named constant, or lowered for the law); the attention's own step form for every decay;
/// the rule of Construction.Smallest; structural facts the outputs cannot see; and every execution path at every
/// weight scale, including weights whose structure-aware reading would be a guess.
module Duality.Properties.LawsBranches

open System
open System.Numerics
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Kernels
open Duality.Execution
open Duality.Reference
open Duality.Streaming
open Duality.Testing.Sequences
open Duality.Testing.Generators
open Duality.Properties.Support

let private f64 = torch.ScalarType.Float64

/// Elements of a float64 SIMD vector on this machine.
let private lanes = Vector<double>.Count

/// Widths around the float64 SIMD width: 1, C - 1, C, C + 1, 2 C + 1.
let private simdWidths = [ 1; lanes - 1; lanes; lanes + 1; 2 * lanes + 1 ] |> List.filter (fun w -> w > 0) |> List.distinct

let private decays = [ AttentionDecay.NoDecay; AttentionDecay.Gamma 0.9; AttentionDecay.Rotating(0.95, 0.7); AttentionDecay.Gated ]

/// A causal attention named "a" with seeded weights.
let private attention width heads key value (out: int option) kernel featureMap (decay: AttentionDecay) seed =
    let gamma, phase, gated =
        match decay with
        | AttentionDecay.Gamma g -> Nullable g, Nullable(), false
        | AttentionDecay.Rotating(g, theta) -> Nullable g, Nullable theta, false
        | AttentionDecay.Gated -> Nullable(), Nullable(), true
        | _ -> Nullable(), Nullable(), false
    InitializeWeights.Run(
        Model.Input("x", width)
            .Attention(heads, key, value, outFeatures = Option.toNullable out, kernel = kernel, featureMap = featureMap,
                       decay = gamma, decayPhase = phase, inputDependentDecay = gated, name = "a")
            .Build(), seed)

let private linear width heads key value out decay seed =
    attention width heads key value out AttentionKernel.Linear ActivationKind.Identity decay seed

/// The graph's output for x without gradients (float64) under one execution mode, and the compiled model.
let private forward (g: Graph) execution (x: Sequence) =
    let model = g.Compile(CompileOptions(DType = f64, Execution = execution))
    noGrad (fun () -> model.forward(toTensor f64 x) |> ofTensor), model

let private ramp (shape: int64[]) = torch.linspace(-1.0, 1.0, Array.fold (*) 1L shape, dtype = f64).reshape(shape)

/// The loss, whose form decides the layout of the gradient reaching a scan (dense, or stride 0 along some dimensions).
let private reduce (loss: LawsKernels.Loss) (y: torch.Tensor) =
    match loss with
    | LawsKernels.Loss.Sum -> y.sum()
    | LawsKernels.Loss.StepWeights -> (y.sum([| -1L |]) * ramp y.shape.[0..1]).sum()
    | LawsKernels.Loss.ChannelWeights -> (y.sum([| 0L; 1L |]) * ramp [| y.shape.[2] |]).sum()
    | _ -> (y * ramp y.shape).sum()

/// Output, input gradient and every parameter's gradient (float64) of a loss under one execution mode.
let private gradientsOf loss (g: Graph) execution (x: Sequence) =
    let model = g.Compile(CompileOptions(DType = f64, Execution = execution))
    let x = (toTensor f64 x).requires_grad_(true)
    let y = model.forward(x)
    backwardOf (fun () -> reduce loss y)
    let grads =
        model.named_parameters()
        |> Seq.map (fun struct (n, p) -> n, (if isNull p.grad then [||] else ofTensorFlat p.grad))
        |> List.ofSeq
    ofTensor y, ofTensor x.grad, grads

let private gradients g execution x = gradientsOf LawsKernels.Loss.Probe g execution x

/// max |a - b| / (1 + max |a|) over flat arrays.
let private flatError (a: double[]) (b: double[]) =
    if a.Length <> b.Length then infinity
    else
        let scale = 1.0 + (a |> Array.fold (fun m v -> max m (abs v)) 0.0)
        (Array.map2 (fun x y -> abs (x - y)) a b |> Array.fold max 0.0) / scale

/// Two runs with gradients agree: outputs, input gradients and each parameter's gradient (scaled error <= 1e-10).
let private sameGradients label (yA, dxA, gradsA) (yB, dxB, gradsB) =
    within 1e-10 (scaledError yA yB) (label + ": outputs") |> ignore
    within 1e-10 (scaledError dxA dxB) (label + ": input gradients") |> ignore
    List.iter2 (fun (n1, a) (n2, b) ->
        if n1 <> n2 then failwithf "%s: parameters %s and %s" label n1 n2
        within 1e-10 (flatError a b) (sprintf "%s: gradient of %s" label n1) |> ignore) gradsA gradsB

let private structureAwareRan (model: Duality.Torch.CompiledGraph) label =
    let groups = List.ofSeq model.FusedGroups
    if not (groups |> List.exists (fun g -> g.Kind.StartsWith "structure-aware" && g.Fused >= 1L && g.NodeByNode = 0L)) then
        failwithf "%s: no structure-aware group ran fused: %A" label groups

/// Runs f with a threshold lowered, restoring it after (laws doing so run sequenced: the value is global).
let private withThreshold (set: 'T -> unit) (original: 'T) (lowered: 'T) f =
    set lowered
    try f () finally set original

/// The times just below and at a threshold of work = time x perStep.
let private timesAround (threshold: int64) (perStep: int64) =
    [ int ((threshold - 1L) / perStep); int ((threshold + perStep - 1L) / perStep) ]

// ---------------------------------------------------------------------------------------------------------------
// thresholds

let private structureAwareParallel =
    testCase (sprintf "GatedLayerLoop.ParallelWork (%d): the structure-aware layer (lowered heads, every decay) = node by node with time x neurons just below and at it, batch 1 and 2 (float64, <= 1e-10)" GatedLayerLoop.ParallelWork) <| fun () ->
        // 4 heads, key 8, value 2 C + 1: lowered heads whose SIMD loops run full vectors and a tail
        let heads, key, value = 4, 8, 2 * lanes + 1
        for decay in decays do
            let lowering = LowerAttention.Run(linear 5 heads key value (Some 3) decay 11, Construction.Full)
            let lowered, neurons = lowering.Graph, lowering.Lowered.[0].RecurrentNeurons
            for time in timesAround (int64 GatedLayerLoop.ParallelWork) (int64 neurons) do
                for batch in [ 1; 2 ] do
                    let label = sprintf "%A, time %d x %d neurons, batch %d" decay time neurons batch
                    let x = randomSequence (Random(time + batch)) batch time 5 1.0
                    let structured, model = forward lowered ExecutionMode.Auto x
                    structureAwareRan model label
                    within 1e-10 (scaledError (fst (forward lowered ExecutionMode.TorchOps x)) structured) label |> ignore

let private attentionParallel =
    testCase (sprintf "HeadPairs.ParallelWork (%d): the fused attention = the masked form with time x key x value just below and at it, one and several (batch row, head) pairs, every decay (float64, <= 1e-10)" HeadPairs.ParallelWork) <| fun () ->
        let key, value = 8, 2 * lanes + 1
        for decay in decays do
            for featureMap in [ ActivationKind.Identity; ActivationKind.EluPlusOne ] do
                for time in timesAround (int64 HeadPairs.ParallelWork) (int64 (key * value)) do
                    for batch, heads in [ 1, 1; 1, 2; 2, 1 ] do
                        let label = sprintf "%A, %A, time %d, batch %d, heads %d" decay featureMap time batch heads
                        let g = attention 4 heads key value None AttentionKernel.Linear featureMap decay (time + heads)
                        let x = randomSequence (Random(time)) batch time 4 1.0
                        within 1e-10 (scaledError (fst (forward g ExecutionMode.TorchOps x)) (fst (forward g ExecutionMode.Auto x))) label |> ignore

let private chunked =
    testCase (sprintf "AttentionModule.Chunk (%d): with gradients, chunked causal linear attention = the masked form at T = C - 1, C, C + 1, 2 C + 1: outputs, input and parameter gradients (float64, <= 1e-10)" Duality.Torch.AttentionModule.Chunk) <| fun () ->
        let c = Duality.Torch.AttentionModule.Chunk
        for decay in decays do
            for time in [ c - 1; c; c + 1; 2 * c + 1 ] do
                let g = linear 3 2 3 5 (Some 2) decay time
                let x = randomSequence (Random(time)) 2 time 3 1.0
                sameGradients (sprintf "%A, T = %d" decay time) (gradients g ExecutionMode.TorchOps x) (gradients g ExecutionMode.Auto x)

let private tiledParallel =
    testCase (sprintf "TiledSoftmaxLoops.ParallelWork (%d): tiled softmax attention = the masked form just below and at it, and with one (row, block) pair above it: outputs, dq, dk, dv (float64, <= 1e-10)" TiledSoftmaxLoops.ParallelWork) <| fun () ->
        let random (seed: int) (shape: int64 list) =
            let r = Random(seed)
            torch.from_array(Array.init (int (List.fold (*) 1L shape)) (fun _ -> 3.0 * r.NextDouble() - 1.5)).reshape(Array.ofList shape)
        let masked (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) (scale: float) =
            let time = q.shape.[2]
            q.matmul(k.transpose(-2L, -1L)).mul(torch.tensor(scale, dtype = f64))
                .masked_fill(torch.ones(time, time, dtype = torch.ScalarType.Bool).triu(1L), Double.NegativeInfinity).softmax(-1L).matmul(v)
        let run attend (q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) (g: torch.Tensor) =
            let q, k, v = q.detach().requires_grad_(true), k.detach().requires_grad_(true), v.detach().requires_grad_(true)
            let y: torch.Tensor = attend q k v
            y.backward([| g |])
            y.detach() :: [ q.grad; k.grad; v.grad ]
        let error (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float>() / (1.0 + a.abs().max().item<float>())
        // 2 rows (heads), key + value 8: the last T below the threshold and the first at it (two blocks of 128, four
        // pairs); one row of one block with key + value 64 is above it with a single pair
        let work heads time width = int64 heads * int64 time * int64 time * int64 width
        let below = Seq.initInfinite id |> Seq.find (fun t -> work 2 (t + 1) 8 >= TiledSoftmaxLoops.ParallelWork)
        let block = TiledAttention.DefaultBlock
        if work 1 block 64 < TiledSoftmaxLoops.ParallelWork then failwith "one block of one row is below the threshold"
        let cases = [ 2L, int64 below, 3L, 5L; 2L, int64 below + 1L, 3L, 5L; 1L, int64 block, 30L, 34L ]
        for heads, time, key, value in cases do
            let label = sprintf "heads %d, T %d, key %d, value %d" heads time key value
            let seed = int time
            let q, k, v = random seed [ 1L; heads; time; key ], random (seed + 1) [ 1L; heads; time; key ], random (seed + 2) [ 1L; heads; time; value ]
            let g = random (seed + 3) [ 1L; heads; time; value ]
            let scale = 1.0 / sqrt (float key)
            let expected = run (fun q k v -> masked q k v scale) (q, k, v) g
            let actual = run (fun q k v -> TiledAttention.Softmax(q, k, v, true, scale)) (q, k, v) g
            List.zip3 [ "outputs"; "dq"; "dk"; "dv" ] expected actual
            |> List.iter (fun (what, e, a) -> within 1e-10 (error e a) (sprintf "%s: %s" label what) |> ignore)

let private scanPartitions =
    testCase (sprintf "ScanPartition (blocks of %d to %d channels, multiples of %d): fused scans and gate + recurrence (fixed and input-dependent decays) = TorchSharp step loops at widths around both block limits, batch 1 and 2 x cores + 1: outputs, input and parameter gradients (float64, <= 1e-10)" ScanPartition.MinBlock ScanPartition.MaxBlock ScanPartition.Alignment) <| fun () ->
        // one row is cut into blocks from MinBlock channels on; a batch as large as the items wanted keeps whole
        // rows, cut only beyond MaxBlock channels
        let many = 2 * Environment.ProcessorCount + 1
        let sizes =
            [ for w in [ ScanPartition.MinBlock - 1; ScanPartition.MinBlock; ScanPartition.MinBlock + 1; 2 * ScanPartition.MinBlock + ScanPartition.Alignment + 1 ] -> 1, w
              for w in [ ScanPartition.MaxBlock; ScanPartition.MaxBlock + 1 ] -> many, w ]
        for batch, width in sizes do
            for kind in 0 .. 5 do
                let c : LawsKernels.RecurrenceCase =
                    { Kind = kind; Width = width; Batch = batch; Time = 3; WithState = kind % 2 = 0; Seed = kind + width; Loss = LawsKernels.Loss.Probe }
                let g = LawsKernels.recurrenceGraph c
                let x = randomSequence (Random(c.Seed)) batch 3 width 1.0
                sameGradients (sprintf "recurrence kind %d, batch %d, width %d" kind batch width)
                    (gradients g ExecutionMode.TorchOps x) (gradients g ExecutionMode.Auto x)
            let gated =
                InitializeWeights.Run(
                    Model.Input("x", 3).Gate((fun v -> v.Projection(width)), (fun g -> g.Projection(width)), ActivationKind.SiLU)
                        .LinearRecurrence().Build(), width)
            let x = randomSequence (Random(width)) batch 3 3 1.0
            sameGradients (sprintf "gate + recurrence, batch %d, width %d" batch width) (gradients gated ExecutionMode.TorchOps x) (gradients gated ExecutionMode.Auto x)
            within 1e-10 (scaledError (fst (forward gated ExecutionMode.TorchOps x)) (fst (forward gated ExecutionMode.Auto x)))
                (sprintf "gate + recurrence without gradients, batch %d, width %d" batch width) |> ignore
            // minGRU's form: the gate's projection, negated, is the decay sigmoid(-z) the fused pass computes per step
            let decayed =
                InitializeWeights.Run(
                    Model.Input("x", 3).Gate((fun v -> v.Projection(width)), (fun g -> g.Projection(width, name = "z")), ActivationKind.Sigmoid)
                        .LinearRecurrence(decay = (fun d -> d.From("gate/gate/z").Scale(-1.0))).Build(), width)
            within 1e-10 (scaledError (fst (forward decayed ExecutionMode.TorchOps x)) (fst (forward decayed ExecutionMode.Auto x)))
                (sprintf "gate + recurrence with an input-dependent decay, batch %d, width %d" batch width) |> ignore

let private convolutionPieces =
    testCase (sprintf "CausalConvolution.ParallelWork (%d): the causal convolution = TorchSharp's conv1d with rows x channels x taps just below, at and above it, one and several batch rows, with and without a bias: outputs, input and parameter gradients (float64, <= 1e-10)" CausalConvolution.ParallelWork) <| fun () ->
        // 64 channels and 4 taps: ParallelWork / 256 rows is the threshold; 3 x 347 rows split unevenly over the pieces
        let threshold = int (CausalConvolution.ParallelWork / 256L)
        for batch, time in [ 1, threshold - 1; 1, threshold; 3, 347 ] do
            for bias in [ true; false ] do
                let g = InitializeWeights.Run(Model.Input("x", 64).CausalConv1d(4, bias = bias, name = "conv").Build(), time + batch)
                let x = randomSequence (Random(time)) batch time 64 1.0
                sameGradients (sprintf "batch %d, time %d, bias %b" batch time bias) (gradients g ExecutionMode.TorchOps x) (gradients g ExecutionMode.Auto x)

let private valueSkipRanges =
    testCase (sprintf "RowRanges.ParallelWork (%d) in Mamba-2's skip D v within the attention's group: = TorchOps with rows x heads value just below, at and above it, one and several batch rows: outputs, input and parameter gradients (float64, <= 1e-10)" RowRanges.ParallelWork) <| fun () ->
        // 2 heads of value 16 read within "shared" beside the heads' query and key slices: ParallelWork / 32 rows is the
        // threshold; 3 x 347 rows split unevenly over the ranges and end within a block of the gradient's sums
        let threshold = int (RowRanges.ParallelWork / 32L)
        let g =
            let slices part start =
                [| for h in 0 .. 1 -> Func<SequenceBuilder, SequenceBuilder>(fun b -> b.From("shared").Slice(start, 4, name = sprintf "%s%d" part h)) |]
            let built =
                Model.Input("x", 8).Projection(40, name = "shared")
                    .GatedLinearAttention(2, 4, 16, (fun q -> q.Concat("q", slices "q" 32)), (fun k -> k.Concat("k", slices "k" 36)),
                                          (fun v -> v.From("shared").Slice(0, 32, name = "v")), (fun l -> l.Projection(2).LogSigmoid()),
                                          (fun i -> i.Projection(2)), false, name = "a")
                    .Add((fun s -> s.From("a/value/v").ChannelScale(name = "D")), name = "skip").Build()
            InitializeWeights.Run(built, 7, WeightInit.Perturbed)
        // beside the decay's softplus and channel scale, one elementwise chain
        let kind = (g.Compile(CompileOptions.Float64).FusedGroups |> Seq.map (fun group -> group.Kind) |> List.ofSeq)
        if kind <> [ "attention reading shared slices, with the skip D v"; "elementwise chain" ] then failwithf "groups %A" kind
        for batch, time in [ 1, threshold - 1; 1, threshold; 3, 347 ] do
            let x = randomSequence (Random(time)) batch time 8 1.0
            sameGradients (sprintf "batch %d, time %d" batch time) (gradients g ExecutionMode.TorchOps x) (gradients g ExecutionMode.Auto x)

let private fingerprints =
    testCase (sprintf "Fingerprint.ParallelBytes (%d): equal tensors hash alike and changing any one element (first, either side of the middle, last) changes the hash, just below, at and above it" Fingerprint.ParallelBytes) <| fun () ->
        let elements = Fingerprint.ParallelBytes / 8
        for count in [ elements - 1; elements; elements + 1; 3 * elements + 5 ] do
            let values = Array.init count (fun i -> sin (float i))
            let t = torch.tensor(values, dtype = f64)
            let hash = Fingerprint.Of([| t |])
            if Fingerprint.Of([| torch.tensor(Array.copy values, dtype = f64) |]) <> hash then failwithf "%d elements: equal tensors hash differently" count
            for at in [ 0; count / 2 - 1; count / 2; count / 2 + 1; count - 1 ] do
                let changed = Array.copy values
                changed.[at] <- BitConverter.Int64BitsToDouble(BitConverter.DoubleToInt64Bits changed.[at] + 1L)
                if Fingerprint.Of([| torch.tensor(changed, dtype = f64) |]) = hash then
                    failwithf "%d elements: a change at %d leaves the hash as it was" count at

let private simd =
    testCase (sprintf "SIMD widths (float64 vectors of %d): fused attention, structure-aware lowered layers (perturbed too) and the streamer = node by node at key, value and input widths %A, every decay (float64, <= 1e-10)" lanes simdWidths) <| fun () ->
        for width in simdWidths do
            for decay in decays do
                let label = sprintf "%A, widths %d" decay width
                let g = linear width 2 width width None decay width
                let lowered = LowerAttention.ToGatedRnn(g, Construction.Full)
                let x = randomSequence (Random(width)) 2 5 width 1.0
                let expected = fst (forward g ExecutionMode.TorchOps x)
                within 1e-10 (scaledError expected (fst (forward g ExecutionMode.Auto x))) (label + ": fused attention") |> ignore
                let structured, model = forward lowered ExecutionMode.Auto x
                structureAwareRan model label
                within 1e-10 (scaledError expected structured) (label + ": structure-aware") |> ignore
                within 1e-10 (scaledError expected (LawsStreaming.stream64 (Streamer.Create<float>(lowered, 2)) lowered [| x |]).[0]) (label + ": streamer") |> ignore
                match decay with
                | AttentionDecay.NoDecay | AttentionDecay.Gamma _ ->
                    // perturbed weights: runs that are not heads (paired and unpaired blocks, vectorised along keys)
                    let shuffled = LawsRaising.perturbed width lowered
                    within 1e-10 (scaledError expected (fst (forward shuffled ExecutionMode.Auto x))) (label + ": perturbed, structure-aware") |> ignore
                | _ -> ()

/// Global thresholds lowered so small tensors take the large-tensor paths; run sequenced.
let private lowered =
    testList "lowered thresholds" [
        testCase "StreamingStores.MinBytes lowered to 0: fused scans with non-temporal stores = TorchSharp step loops, every eigenvalue layout, aligned and unaligned rows, every gradient layout: outputs, input and parameter gradients (float64, <= 1e-10)" <| fun () ->
            withThreshold (fun v -> StreamingStores.MinBytes <- v) StreamingStores.MinBytes 0L (fun () ->
                for kind in [ 0; 1; 4; 5 ] do
                    for width in [ 7; 4 * lanes; ScanPartition.MinBlock + 2 * ScanPartition.Alignment ] do
                        for batch in [ 1; 3 ] do
                            for loss in [ LawsKernels.Loss.Probe; LawsKernels.Loss.Sum; LawsKernels.Loss.StepWeights; LawsKernels.Loss.ChannelWeights ] do
                                let c : LawsKernels.RecurrenceCase =
                                    { Kind = kind; Width = width; Batch = batch; Time = 5; WithState = batch = 1; Seed = kind * 7 + width; Loss = loss }
                                let g = LawsKernels.recurrenceGraph c
                                let x = randomSequence (Random(c.Seed)) batch 5 width 1.0
                                sameGradients (sprintf "kind %d, width %d, batch %d, %A" kind width batch loss)
                                    (gradientsOf loss g ExecutionMode.TorchOps x) (gradientsOf loss g ExecutionMode.Auto x))

        testCase "LargeTensors.MinBytes lowered to 1 byte, IdleLimitBytes as it is and lowered to 0 (every returned block freed): every kernel output from the pool = the reference evaluator, three passes (recycled blocks hold stale values); with gradients = TorchSharp operations (float64, <= 1e-10)" <| fun () ->
            let graphs =
                [ for kind in 0 .. 5 do
                      yield sprintf "recurrence kind %d" kind,
                            LawsKernels.recurrenceGraph { Kind = kind; Width = 9; Batch = 2; Time = 6; WithState = true; Seed = kind; Loss = LawsKernels.Loss.Probe }
                  yield "gate + recurrence",
                        InitializeWeights.Run(Model.Input("x", 9).Gate((fun v -> v.Projection(9)), (fun g -> g.Projection(9)), ActivationKind.Sigmoid)
                                                  .LinearRecurrence().Projection(4).Build(), 3)
                  for decay in decays do
                      let g = linear 9 2 3 4 (Some 5) decay 4
                      yield sprintf "attention, %A" decay, g
                      yield sprintf "lowered (full), %A" decay, LowerAttention.ToGatedRnn(g, Construction.Full)
                      yield sprintf "lowered (compressed), %A" decay, LowerAttention.ToGatedRnn(g, Construction.Compressed) ]
            withThreshold (fun v -> LargeTensors.MinBytes <- v) LargeTensors.MinBytes 1L (fun () ->
                for idle in [ LargeTensors.IdleLimitBytes; 0L ] do
                    withThreshold (fun v -> LargeTensors.IdleLimitBytes <- v) LargeTensors.IdleLimitBytes idle (fun () ->
                        for name, g in graphs do
                            let label = sprintf "%s, idle limit %d" name idle
                            let x = randomSequence (Random(name.Length)) 2 6 9 1.0
                            let expected = ReferenceEvaluator.Evaluate(g, [| x |]).[0]
                            let model = g.Compile(CompileOptions.Float64)
                            for pass in 1 .. 3 do
                                let y = noGrad (fun () -> model.forward(toTensor f64 x) |> ofTensor)
                                within 1e-10 (scaledError expected y) (sprintf "%s, pass %d" label pass) |> ignore
                            sameGradients (label + ", with gradients") (gradients g ExecutionMode.TorchOps x) (gradients g ExecutionMode.Auto x)))
    ]

let private thresholds =
    testList "thresholds" [
        structureAwareParallel
        attentionParallel
        chunked
        tiledParallel
        scanPartitions
        convolutionPieces
        valueSkipRanges
        fingerprints
        simd
        testSequenced lowered
    ]

// ---------------------------------------------------------------------------------------------------------------
// the attention's own step form

let private stepForm =
    testCase "Attention: the step form (compiled ToStepForm().Unroll, and the streamer) = the full form (fused and masked) = the reference evaluator, linear (identity and elu+1; no decay, gamma, rotating gamma e^(i theta), input-dependent) and softmax, causal, T >= 3 (float64, relative error <= 1e-10)" <| fun () ->
        let kinds =
            [ for featureMap in [ ActivationKind.Identity; ActivationKind.EluPlusOne ] do
                for decay in decays @ [ AttentionDecay.Rotating(1.0, -2.5); AttentionDecay.Gamma 0.5 ] -> AttentionKernel.Linear, featureMap, decay
              yield AttentionKernel.Softmax, ActivationKind.Identity, AttentionDecay.NoDecay ]
        for index, (kernel, featureMap, decay) in List.indexed kinds do
            for seed in 1 .. 3 do
                let random = Random(index * 31 + seed)
                let pick (xs: int list) = xs.[random.Next xs.Length]
                let width, heads, key, value = pick (3 :: simdWidths), random.Next(1, 4), pick simdWidths, pick simdWidths
                let out = if random.Next 2 = 0 then None else Some (random.Next(1, 6))
                let time, batch = pick [ 3; 4; 9 ], 2
                let g = attention width heads key value out kernel featureMap decay seed
                let label = sprintf "%A, %A, %A, width %d, heads %d, key %d, value %d, out %A, T = %d" kernel featureMap decay width heads key value out time
                let x = randomSequence (Random seed) batch time width 1.0
                let expected = ReferenceEvaluator.Evaluate(g, [| x |]).[0]
                let full, model = forward g ExecutionMode.Auto x
                let stepped = noGrad (fun () -> model.ToStepForm().Unroll(toTensor f64 x) |> ofTensor)
                // capacity 1: a softmax attention's cache grows on the way
                let streamed = (LawsStreaming.stream64 (Streamer.Create<float>(g, batch, 1)) g [| x |]).[0]
                within 1e-10 (relativeError expected full) (label + ": full form") |> ignore
                within 1e-10 (relativeError expected (fst (forward g ExecutionMode.TorchOps x))) (label + ": masked form") |> ignore
                within 1e-10 (relativeError expected stepped) (label + ": step form") |> ignore
                within 1e-10 (relativeError expected streamed) (label + ": streamer") |> ignore

// ---------------------------------------------------------------------------------------------------------------
// Construction.Smallest

/// Both constructions' reports (the compressed one only without a feature map) and the default's.
let private reports (g: Graph) (a: Attention) =
    let full = (LowerAttention.Run(g, Construction.Full)).Lowered.[0]
    let compressed = if a.FeatureMap = ActivationKind.Identity then Some (LowerAttention.Run(g, Construction.Compressed)).Lowered.[0] else None
    full, compressed, LowerAttention.Run(g)

let private smallestRule (g: Graph) =
    let a = g.Nodes |> Seq.pick (function :? Attention as a -> Some a | _ -> None)
    let full, compressed, lowering = reports g a
    let chosen = lowering.Lowered.[0]
    let label = sprintf "d %d, heads %d, key %d, value %d, %A" a.InFeatures a.Heads a.KeyWidth a.ValueWidth a.FeatureMap
    let expected =
        match compressed with
        | None -> full
        | Some c when (c.RecurrentNeurons, c.Parameters) < (full.RecurrentNeurons, full.Parameters) -> c
        | _ -> full
    if chosen.Construction <> expected.Construction then
        failwithf "%s: chose %A (%d neurons, %d parameters); full has %d, %d; compressed %A" label chosen.Construction chosen.RecurrentNeurons
            chosen.Parameters full.RecurrentNeurons full.Parameters (compressed |> Option.map (fun c -> c.RecurrentNeurons, c.Parameters))
    match compressed with
    | Some c when c.RecurrentNeurons = full.RecurrentNeurons && chosen.Parameters > min c.Parameters full.Parameters ->
        failwithf "%s: a tie in neurons, and the choice has %d parameters, the other %d" label chosen.Parameters (min c.Parameters full.Parameters)
    | _ -> ()
    // the report tells the truth: the graph is the one the named construction builds
    if not (lowering.Graph.Equals((LowerAttention.Run(g, chosen.Construction)).Graph)) then failwithf "%s: the graph is not the %A construction's" label chosen.Construction
    chosen.RecurrentNeurons = (compressed |> Option.map (fun c -> min c.RecurrentNeurons full.RecurrentNeurons) |> Option.defaultValue full.RecurrentNeurons)

let private constructions =
    testList "constructions" [
        testCase "Construction.Smallest: fewer recurrent neurons, then fewer parameters, full on complete ties and with a feature map; on a tie in neurons never more parameters than the other; the report names the construction built (every d <= 6, key, value <= 8)" <| fun () ->
            for d in 1 .. 6 do
                for key in 1 .. 8 do
                    for value in 1 .. 8 do
                        for featureMap in [ ActivationKind.Identity; ActivationKind.EluPlusOne ] do
                            let g = attention d 2 key value None AttentionKernel.Linear featureMap AttentionDecay.NoDecay (d + key + value)
                            if not (smallestRule g) then failwithf "d %d, key %d, value %d: not the fewest neurons" d key value

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 100; endSize = 64 } "Construction.Smallest on random attention layers (every decay, outputs or none): the rule holds" <|
            Prop.forAll arbLayer (fun l -> smallestRule (attentionGraph l))
    ]

// ---------------------------------------------------------------------------------------------------------------
// structural facts

let private memoryNeurons (a: Attention) construction =
    match construction with
    | Construction.Compressed -> a.Heads * (a.InFeatures * (a.InFeatures + 1) / 2)
    | _ -> a.Heads * a.KeyWidth * a.ValueWidth

let private attentionIn (g: Graph) = g.Nodes |> Seq.pick (function :? Attention as a -> Some a | _ -> None)

let private structure =
    testList "structure" [
        testCase "LowerAttention of a rotating decay gamma e^(i theta): lambda = (gamma cos theta, gamma sin theta) on memory neurons, 0 on query neurons, complex state read as its real part (both constructions); RaiseAttention returns gamma and theta itself (theta in (-pi, pi); beyond, theta modulo 2 pi)" <| fun () ->
            for gamma in [ 0.5; 0.9; 1.0 ] do
                for theta in [ -3.1; -1.0; -0.3; 0.4; Math.PI / 2.0; 2.0; 3.1; Math.PI - 1e-3; 4.0 ] do
                    for construction in [ Construction.Full; Construction.Compressed ] do
                        let g = linear 3 2 2 3 (Some 2) (AttentionDecay.Rotating(gamma, theta)) 7
                        let a = attentionIn g
                        let label = sprintf "gamma %g, theta %g, %A" gamma theta construction
                        let lowered = LowerAttention.ToGatedRnn(g, construction)
                        let memory = lowered.Nodes |> Seq.pick (function :? LinearRecurrence as r -> Some r | _ -> None)
                        if memory.State <> StateKind.Complex || memory.Readout <> ComplexReadout.RealPart then failwithf "%s: not a complex state read as its real part" label
                        let stored = memoryNeurons a construction
                        for i in 0 .. memory.Width - 1 do
                            let expected = if i < stored then gamma * cos theta, gamma * sin theta else 0.0, 0.0
                            if (memory.Lambda.[i, 0], memory.Lambda.[i, 1]) <> expected then
                                failwithf "%s: neuron %d has lambda (%g, %g), expected %A" label i memory.Lambda.[i, 0] memory.Lambda.[i, 1] expected
                        let raised = attentionIn (RaiseAttention.Run(lowered)).Graph
                        let phase = raised.DecayPhase.GetValueOrDefault(0.0)
                        let wrapped = Math.IEEERemainder(theta, 2.0 * Math.PI)
                        if abs ((raised.Decay.GetValueOrDefault 1.0) - gamma) > 1e-12 || abs (phase - wrapped) > 1e-12 then
                            failwithf "%s: raised as gamma %A, theta %A" label raised.Decay raised.DecayPhase

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 100; endSize = 64 } "LowerAttention then RaiseAttention (full construction, every decay): the attention's heads, key and value widths, decay kind, gamma and theta come back" <|
            Prop.forAll arbLayer (fun l ->
                // rows are generic (pairwise non-parallel) once the input has two or more features
                l.Width >= 2 ==> lazy (
                    let a = attentionIn (attentionGraph l)
                    let r = attentionIn (RaiseAttention.Run(LowerAttention.ToGatedRnn(attentionGraph l, Construction.Full))).Graph
                    // no decay is gamma 1, no phase theta 0
                    let close (absent: float) (x: Nullable<float>) (y: Nullable<float>) = abs (x.GetValueOrDefault absent - y.GetValueOrDefault absent) <= 1e-12
                    (r.Heads, r.KeyWidth, r.ValueWidth, r.InputDependentDecay) = (a.Heads, a.KeyWidth, a.ValueWidth, a.InputDependentDecay)
                    && close 1.0 r.Decay a.Decay && close 0.0 r.DecayPhase a.DecayPhase
                    || failwithf "raised %O from %O" r a))
    ]

// ---------------------------------------------------------------------------------------------------------------
// every path at every weight scale

/// The attention's projection weights times `all` (W_V also times `value`); the decay's weights too times `all`.
let private rescaled (all: float) (value: float) (g: Graph) =
    let times (s: float) (t: DoubleTensor) = if isNull (box t) then t else DoubleTensor.FromShape(Array.ofSeq t.Shape, t.Data |> Seq.map ((*) s) |> Array.ofSeq)
    g.MapNodes(function
        | :? Attention as a ->
            let w = a.Weights
            Attention(a.Name, a.Source, a.InFeatures, a.Heads, a.KeyWidth, a.ValueWidth, a.Causal, a.Kernel, a.FeatureMap, a.Decay, a.OutFeatures,
                      AttentionWeights(times all w.Query, times all w.Key, times (all * value) w.Value, times all w.Output,
                                       times all w.DecayWeight, times all w.DecayBias),
                      a.DecayPhase, a.InputDependentDecay) :> Node
        | n -> n)

/// Every execution mode and the streamer of g equal expected, relative to its own scale (float64, <= 1e-9); the
/// structure-aware path ran fused.
let private everyPath (g: Graph) (expected: Sequence) (x: Sequence) label =
    for mode in [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ] do
        let y, model = forward g mode x
        within 1e-9 (relativeError expected y) (sprintf "%s: %A" label mode) |> ignore
        if mode = ExecutionMode.Auto then structureAwareRan model label
    within 1e-9 (relativeError expected (LawsStreaming.stream64 (Streamer.Create<float>(g, Array3D.length1 x)) g [| x |]).[0]) (label + ": streamer") |> ignore

let private scales =
    testCase "weights x 10^k, k = -15..15 (all weights, or W_V alone), lowered with both constructions: Auto, PerNode, TorchOps and the streamer = the reference evaluator, the structure-aware path runs fused, and RaiseAttention raises to the same function (float64, relative to the output's own scale, <= 1e-9)" <| fun () ->
        for k in -15 .. 15 do
            let layer = (Gen.sampleWithSeed (Rnd(uint64 (k + 100))) 20 1 attentionLayer).[0]
            let l = { layer with WeightScale = 1.0; Time = max 3 (min layer.Time 12) }
            let x = randomSequence (Random(l.Seed)) l.Batch l.Time l.Width 1.0
            for what, all, value in [ "all", 10.0 ** float k, 1.0; "W_V", 1.0, 10.0 ** float k ] do
                let g = rescaled all value (attentionGraph l)
                let expected = ReferenceEvaluator.Evaluate(g, [| x |]).[0]
                let constructions = if l.FeatureMap = ActivationKind.Identity then [ Construction.Full; Construction.Compressed ] else [ Construction.Full ]
                for construction in constructions do
                    let label = sprintf "k = %d (%s), %A, %A" k what construction l
                    let lowered = LowerAttention.ToGatedRnn(g, construction)
                    everyPath lowered expected x label
                    let raising = RaiseAttention.Run(lowered)
                    if raising.Raised.Count <> 1 then failwithf "%s: not raised: %A" label raising.Refused
                    within 1e-9 (relativeError expected (ReferenceEvaluator.Evaluate(raising.Graph, [| x |]).[0])) (label + ": raised") |> ignore

/// A lowered layer whose output gate `output_value` also reads some neurons with weights 1e-14 of its largest: each output
/// neuron m adds epsilon x largest x h[reads m]. With queries of 1e16 those terms dominate the output.
let private withTinyMixing (lowered: Graph) (reads: int -> int) =
    let gate = lowered.Nodes |> Seq.pick (function :? Projection as p when p.Name = "a/output_value" -> Some p | _ -> None)
    let w = gate.Weights.Weight
    let largest = w.Data |> Seq.map abs |> Seq.max
    let rows, columns = w.Shape.[0], w.Shape.[1]
    let values = Array.init (rows * columns) (fun i -> w.[i / columns, i % columns])
    for m in 0 .. rows - 1 do
        values.[m * columns + reads m] <- values.[m * columns + reads m] + 1e-14 * largest
    lowered.WithNode(lowered.IdOf gate.Name, Projection(gate.Name, gate.Source, gate.InFeatures, gate.OutFeatures, false,
                                                        ProjectionWeights(DoubleTensor.FromShape([| rows; columns |], values), null)))

let private guesses =
    testCase "output gates mixing memory and query neurons with weights 1e-14 of their largest (genuinely: with queries of 1e16 they dominate): Auto and the streamer run node by node and equal the reference evaluator, both constructions (float64, relative <= 1e-9)" <| fun () ->
        for construction in [ Construction.Full; Construction.Compressed ] do
            for decay in [ AttentionDecay.NoDecay; AttentionDecay.Gamma 0.9; AttentionDecay.Rotating(0.9, 0.5); AttentionDecay.Gated ] do
                let g =
                    (linear 3 1 2 2 (Some 2) decay 5).MapNodes(function
                        | :? Attention as a ->
                            let w = a.Weights
                            let times (s: float) (t: DoubleTensor) = DoubleTensor.FromShape(Array.ofSeq t.Shape, t.Data |> Seq.map ((*) s) |> Array.ofSeq)
                            // queries of 1e16 (both factors of M = W_K^T W_Q in the compressed form)
                            let q, k = (if construction = Construction.Full then 1e16 else 1e8), (if construction = Construction.Full then 1.0 else 1e8)
                            Attention(a.Name, a.Source, a.InFeatures, a.Heads, a.KeyWidth, a.ValueWidth, a.Causal, a.Kernel, a.FeatureMap, a.Decay,
                                      a.OutFeatures, AttentionWeights(times q w.Query, times k w.Key, w.Value, w.Output, w.DecayWeight, w.DecayBias),
                                      a.DecayPhase, a.InputDependentDecay) :> Node
                        | n -> n)
                let a = attentionIn g
                let lowered = LowerAttention.ToGatedRnn(g, construction)
                let memory = memoryNeurons a construction
                let queries = match construction with Construction.Compressed -> a.InFeatures | _ -> a.KeyWidth
                // output neuron m also reads a query neuron of its head (not the one its query factor selects)
                let mixed = withTinyMixing lowered (fun m -> memory + (m + 1) % queries)
                let label = sprintf "%A, %A" construction decay
                let x = randomSequence (Random 9) 2 4 3 1.0
                let expected = ReferenceEvaluator.Evaluate(mixed, [| x |]).[0]
                if relativeError expected (ReferenceEvaluator.Evaluate(lowered, [| x |]).[0]) < 1e-3 then failwithf "%s: the tiny weights do not matter" label
                let y, model = forward mixed ExecutionMode.Auto x
                within 1e-9 (relativeError expected y) (label + ": Auto") |> ignore
                let group = model.FusedGroups |> Seq.find (fun g -> g.Kind.StartsWith "structure-aware")
                if group.Fused <> 0L then failwithf "%s: the structure-aware path ran: %O" label group
                let s = Streamer.Create<float>(mixed, 2)
                if s.StructuredLayers <> 0 then failwithf "%s: the streamer runs the layer structure-aware" label
                within 1e-9 (relativeError expected (LawsStreaming.stream64 s mixed [| x |]).[0]) (label + ": streamer") |> ignore

let tests =
    testList "branches" [
        thresholds
        stepForm
        constructions
        structure
        testList "scales" [ scales; guesses ]
    ]
