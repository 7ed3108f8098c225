/// Laws of tiled softmax attention (Duality.Kernels.TiledAttention): it computes what the masked T x T form
/// computes, forward and backward; with causal, a NaN or infinity at step t changes nothing before t; a
/// 100,000-step sequence runs in bounded memory. Also the causal mask by selection and the allocation guard.
module Duality.Properties.LawsTiledAttention

open System
open System.IO
open Expecto
open TorchSharp
open Duality.Ir
open Duality
open Duality.Kernels
open Duality.Properties.Support

type private Tensor = torch.Tensor

/// Uniform values in [-1.5, 1.5) from a seed: [batch, heads, time, width].
let private random (seed: int) (dtype: torch.ScalarType) (shape: int64 list) =
    let random = Random(seed)
    let count = shape |> List.fold (*) 1L
    torch.from_array(Array.init (int count) (fun _ -> 3.0 * random.NextDouble() - 1.5)).reshape(Array.ofList shape).to_type(dtype)

/// max |a - b| / (1 + max |a|), in float64; NaN when either holds one.
let private scaledError (expected: Tensor) (actual: Tensor) =
    let e, a = expected.to_type(torch.ScalarType.Float64), actual.to_type(torch.ScalarType.Float64)
    (e - a).abs().max().item<float>() / (1.0 + e.abs().max().item<float>())

/// Equal element by element (so false wherever either holds a NaN).
let private identical (a: Tensor) (b: Tensor) = a.eq(b).all().item<bool>()

/// The plain form: scores, the future masked by selection, softmax, product.
let private masked (q: Tensor) (k: Tensor) (v: Tensor) causal (scale: float) =
    let scores = q.matmul(k.transpose(-2, -1)).mul(torch.tensor(scale, dtype = q.dtype))
    let time = q.shape.[2]
    let scores =
        if causal then scores.masked_fill(torch.ones(time, time, dtype = torch.ScalarType.Bool).triu(1L), Double.NegativeInfinity)
        else scores
    scores.softmax(-1L).matmul(v)

/// The output and dq, dk, dv for the upstream gradient g.
let private withGradients attend (q: Tensor, k: Tensor, v: Tensor) (g: Tensor) =
    let q, k, v = q.detach().requires_grad_(true), k.detach().requires_grad_(true), v.detach().requires_grad_(true)
    let y: Tensor = attend q k v
    y.backward([| g |])
    y.detach(), [ q.grad; k.grad; v.grad ]

type private Case = { Batch: int64; Heads: int64; Time: int64; Key: int64; Value: int64; Causal: bool; Seed: int }

let private inputs dtype c =
    random c.Seed dtype [ c.Batch; c.Heads; c.Time; c.Key ],
    random (c.Seed + 1) dtype [ c.Batch; c.Heads; c.Time; c.Key ],
    random (c.Seed + 2) dtype [ c.Batch; c.Heads; c.Time; c.Value ]

/// Tiled in dtype against the masked form in float64: outputs (recording gradients or not) and dq, dk, dv.
let private agrees dtype tolerance block c =
    // every temporary held until the case ends: one only its finaliser frees could be freed by a collection on another
    // thread while libtorch still reads it
    use _ = torch.NewDisposeScope()
    let scale = 1.0 / sqrt (float c.Key)
    let q, k, v = inputs dtype c
    let g = random (c.Seed + 3) dtype [ c.Batch; c.Heads; c.Time; c.Value ]
    let wide (t: Tensor) = t.to_type(torch.ScalarType.Float64)
    let expected, expectedGradients = withGradients (fun q k v -> masked q k v c.Causal scale) (wide q, wide k, wide v) (wide g)
    let actual, gradients = withGradients (fun q k v -> TiledAttention.Softmax(q, k, v, c.Causal, scale, block)) (q, k, v) g
    let unrecorded = noGrad (fun () -> TiledAttention.Softmax(q, k, v, c.Causal, scale, block))
    let label what = sprintf "%s (T = %d, block %d, causal %b, seed %d)" what c.Time block c.Causal c.Seed
    within tolerance (scaledError expected actual) (label "outputs") |> ignore
    within tolerance (scaledError expected unrecorded) (label "outputs without gradients") |> ignore
    List.zip3 [ "dq"; "dk"; "dv" ] expectedGradients gradients
    |> List.iter (fun (name, e, a) -> within tolerance (scaledError e a) (label name) |> ignore)

/// T = 1, B - 1, B, B + 1 and 3 B + 5 for a block of B steps.
let private timesAround block = [ 1; block - 1; block; block + 1; 3 * block + 5 ] |> List.map int64

let private sizes block =
    [ for causal in [ true; false ] do
        for time in timesAround block do
            yield { Batch = 2L; Heads = 3L; Time = time; Key = 5L; Value = 7L; Causal = causal; Seed = int time + (if causal then 0 else 1000) } ]

/// kind: where the non-finite value goes (0 q, 1 k, 2 v), at step t in every batch row and head, feature 0.
let private spoiled (q: Tensor, k: Tensor, v: Tensor) kind (t: int64) (value: float) =
    let q, k, v = q.clone(), k.clone(), v.clone()
    let target = match kind with 0 -> q | 1 -> k | _ -> v
    noGrad (fun () -> target.narrow(2L, t, 1L).narrow(3L, 0L, 1L).fill_(value) |> ignore)
    q, k, v

/// Resident memory in bytes: "VmRSS" now or "VmHWM", the peak since the last reset.
let private resident (field: string) =
    File.ReadAllLines("/proc/self/status")
    |> Array.find (fun line -> line.StartsWith(field + ":"))
    |> fun line -> int64 (line.Split([| ' '; '\t' |], StringSplitOptions.RemoveEmptyEntries).[1]) * 1024L

/// The peak resident growth of f and its wall time: the kernel's memory, beside a process of any size.
let private peakGrowth (f: unit -> unit) =
    GC.Collect()
    File.WriteAllText("/proc/self/clear_refs", "5") // resets VmHWM to the current resident size
    let before = resident "VmRSS"
    let clock = Diagnostics.Stopwatch.StartNew()
    f ()
    let seconds = clock.Elapsed.TotalSeconds
    resident "VmHWM" - before, seconds

let private memory =
    testList "memory" [
        testCase "T = 100,000 (1 head, width 4, causal, float32): a compiled softmax attention's forward pass runs with resident memory growing by under 256 MB (T^2 scores: 40 GB); the kernel's backward at T = 20,000 likewise; TorchOps refuses the 40 GB of scores with a GraphException" <| fun () ->
            let bound = 256L <<< 20
            let run time backward =
                let q, k, v = inputs torch.ScalarType.Float32 { Batch = 1L; Heads = 1L; Time = time; Key = 4L; Value = 4L; Causal = true; Seed = 5 }
                let g = random 9 torch.ScalarType.Float32 [ 1L; 1L; time; 4L ]
                let growth, seconds =
                    peakGrowth (fun () ->
                        use scope = torch.NewDisposeScope()
                        if backward then
                            withGradients (fun q k v -> TiledAttention.Softmax(q, k, v, true, 0.5)) (q, k, v) g |> ignore
                        else
                            let model = Duality.Builders.Model.Input("x", 4).Attention(1, 4, 4, kernel = Duality.Ir.AttentionKernel.Softmax).Build().Compile()
                            let y = noGrad (fun () -> model.forward(torch.randn(1L, time, 4L)))
                            if not (y.isfinite().all().item<bool>()) then failwith "a non-finite output")
                printfn "tiled attention, T = %d, %s: %.1f s, resident memory +%.0f MB" time
                    (if backward then "forward and backward" else "forward") seconds (float growth / 1e6)
                if growth > bound then failwithf "T = %d: resident memory grew by %.0f MB, above %.0f MB" time (float growth / 1e6) (float bound / 1e6)
            run 100000L false
            run 20000L true
            let plain = Duality.Builders.Model.Input("x", 4).Attention(2, 3, 3, kernel = Duality.Ir.AttentionKernel.Softmax).Build()
                            .Compile(Duality.CompileOptions(Execution = Duality.ExecutionMode.TorchOps))
            Expect.throwsT<Duality.Ir.GraphException> (fun () -> noGrad (fun () -> plain.forward(torch.randn(1L, 100000L, 4L))) |> ignore)
                "TorchOps at T = 100,000 refuses its scores"
    ]

let tests =
    testList "tiled attention" [
        for block in [ 8; TiledAttention.DefaultBlock ] do
            testCase (sprintf "tiled = masked softmax: outputs, dq, dk, dv (float64, scaled error <= 1e-10), causal or not, T in %A around block %d, key 5, value 7, batch 2, heads 3" (timesAround block) block) <| fun () ->
                sizes block |> List.iter (agrees torch.ScalarType.Float64 1e-10 block)

        testCase "tiled = masked softmax in float32 (against float64): outputs, dq, dk, dv within 2e-6 scaled (float32 rounding: about 4e-7)" <| fun () ->
            sizes TiledAttention.DefaultBlock |> List.iter (agrees torch.ScalarType.Float32 2e-6 TiledAttention.DefaultBlock)

        for block in [ 8; TiledAttention.DefaultBlock ] do
            testCase (sprintf "causal: NaN or +Inf in q, k or v at step t leaves outputs before t, and the gradients of a loss on them with respect to steps before t, unchanged bit for bit (float64, T = 40, block %d)" block) <| fun () ->
                let c = { Batch = 2L; Heads = 2L; Time = 40L; Key = 3L; Value = 4L; Causal = true; Seed = 17 }
                let clean = inputs torch.ScalarType.Float64 c
                let g = random 21 torch.ScalarType.Float64 [ c.Batch; c.Heads; c.Time; c.Value ]
                let attend q k v = TiledAttention.Softmax(q, k, v, true, 0.6, block)
                for t in [ 3L; 8L; 13L; 39L ] do
                    let before (x: Tensor) = x.narrow(2L, 0L, t)
                    // the loss reads outputs before t only
                    let upstream = torch.cat([| before g; torch.zeros(c.Batch, c.Heads, c.Time - t, c.Value, dtype = torch.ScalarType.Float64) |], 2L)
                    let y0, gradients0 = withGradients attend clean upstream
                    for kind in [ 0; 1; 2 ] do
                        for value in [ nan; infinity ] do
                            let label what = sprintf "%s, %g in %s at t = %d" what value [| "q"; "k"; "v" |].[kind] t
                            let y, gradients = withGradients attend (spoiled clean kind t value) upstream
                            if not ((before y).isfinite().all().item<bool>()) then failwith (label "a non-finite output before t")
                            if not (identical (before y) (before y0)) then failwith (label "outputs before t changed")
                            if Double.IsNaN value && y.narrow(2L, t, 1L).isfinite().all().item<bool>() then failwith (label "the NaN did not reach the output at t")
                            List.zip3 [ "dq"; "dk"; "dv" ] gradients0 gradients
                            |> List.iter (fun (name, a, b) -> if not (identical (before a) (before b)) then failwith (label (name + " before t changed")))

        testCase "CausalMask.Product = matmul with the future masked; a NaN in x at step t leaves rows before t unchanged (float64, T = 37)" <| fun () ->
            let time = 37L
            let scores = random 31 torch.ScalarType.Float64 [ 2L; time; time ]
            let x = random 32 torch.ScalarType.Float64 [ 2L; time; 3L ]
            let weights = CausalMask.Fill(scores, 0.0)
            let expected = weights.matmul(x)
            within 1e-12 (scaledError expected (CausalMask.Product(weights, x))) "finite x" |> ignore
            for t in [ 0L; 5L; 18L; 36L ] do
                let spoilt = x.clone()
                noGrad (fun () -> spoilt.narrow(1L, t, 1L).fill_(nan) |> ignore)
                let y = CausalMask.Product(weights, spoilt)
                if t > 0L then within 1e-12 (scaledError (expected.narrow(1L, 0L, t)) (y.narrow(1L, 0L, t))) (sprintf "rows before %d" t) |> ignore
                if y.narrow(1L, t, time - t).isfinite().all().item<bool>() then failwithf "the NaN at %d did not reach row %d" t t

        testCase "AllocationGuard: a tensor above the limit throws a GraphException naming the node, the size in GB and a hint; one at the limit passes" <| fun () ->
            AllocationGuard.CheckAllocation(1000L, torch.ScalarType.Float32, "block1/attention", "scores", limitBytes = 4000L)
            let scores = 2L * 100000L * 100000L
            let error =
                try
                    AllocationGuard.CheckAllocation(scores, torch.ScalarType.Float32, "block1/attention", "attention scores [1, 2, 100000, 100000]", limitBytes = (4L <<< 30))
                    None
                with e -> Some e
            match error with
            | Some (:? GraphException as e) ->
                let d = e.Diagnostics |> Seq.exactlyOne
                Expect.equal d.NodePath "block1/attention" "node"
                Expect.stringContains e.Message "80.0 GB" "size in GB"
                Expect.stringContains e.Message "4.3 GB" "limit in GB"
                Expect.isNonEmpty d.Hint "hint"
            | other -> failwithf "expected a GraphException, got %A" other
            Expect.isGreaterThan AllocationGuard.DefaultLimitBytes 0L "the default limit is a quarter of the memory available"

        testSequenced memory
    ]
