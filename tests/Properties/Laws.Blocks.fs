/// Laws of the block families (`Blocks`): every form a block runs in computes its paper's equations, its
/// parameter count is the paper's formula, and a case small enough to work out by hand comes out as worked.
module Duality.Properties.LawsBlocks

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Builders
open Duality.Ir
open Duality.Passes
open Duality.Reference
open Duality.Properties.Support
open Duality.Testing.Sequences

let private f64 = torch.ScalarType.Float64
/// float64: the same arithmetic in another order.
let private tolerance64 = 1e-10
/// float32 against the float64 reference, scaled error: a few hundred float32 roundings.
let private tolerance32 = 1e-4

/// RetNet's per-head decays, gamma_h = 1 - 2^(-5-h).
let private retNetDecays heads = Array.init heads (fun h -> 1.0 - 2.0 ** (-5.0 - float h))

/// A seeded attention over width 5 with RetNet's per-head decays and an output projection to 4, an input of
/// `time` steps (batch 2), and its reference output.
let private multiScale heads key value time seed =
    let g = InitializeWeights.Run(Model.Input("x", 5).Attention(heads, key, value, outFeatures = 4, headDecays = retNetDecays heads).Build(), seed)
    let x = randomSequence (Random(seed)) 2 time 5 1.0
    g, x, (ReferenceEvaluator.Evaluate(g, [| x |])).[0]

/// h itself when it divides d, else 1: a number of heads for width d.
let private headsOf d h = if d % h = 0 then h else 1

/// A family: its C# and F# forms over an input of width d with state width h, and its paper's parameter count.
type private Family =
    { Name: string
      CSharp: int -> int -> Graph
      FSharp: int -> int -> Graph
      Parameters: int -> int -> int64 }

let private families =
    [ { Name = "minGRU"
        CSharp = fun d h -> Model.Input("x", d).Then(Blocks.MinGru(h)).Build()
        FSharp = fun d h -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.minGru h)
        Parameters = fun d h -> 2L * int64 h * int64 (d + 1) }
      { Name = "minLSTM"
        CSharp = fun d h -> Model.Input("x", d).Then(Blocks.MinLstm(h)).Build()
        FSharp = fun d h -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.minLstm h)
        Parameters = fun d h -> 3L * int64 h * int64 (d + 1) }
      // h is the expansion M
      { Name = "gated MLP"
        CSharp = fun d m -> Model.Input("x", d).Then(Blocks.GatedMlp(m)).Build()
        FSharp = fun d m -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.gatedMlp m)
        Parameters = fun d m -> 2L * int64 (d + 1) * int64 (m * d) + int64 (m * d + 1) * int64 d }
      // h heads where h divides d, else 1
      { Name = "RG-LRU"
        CSharp = fun d h -> Model.Input("x", d).Then(Blocks.RgLru(headsOf d h)).Build()
        FSharp = fun d h -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.rgLru (headsOf d h))
        Parameters = fun d h -> let heads = headsOf d h in 2L * int64 (d * d / heads + d) + int64 d }
      // h is the RNN width D; one head, four taps
      { Name = "Griffin recurrent block"
        CSharp = fun d h -> Model.Input("x", d).Then(Blocks.GriffinRecurrent(h, 1, 4)).Build()
        FSharp = fun d h -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.griffinRecurrent h 1 4)
        Parameters = fun d h ->
            let d, h = int64 d, int64 h
            2L * (d + 1L) * h + 5L * h + (2L * (h * h + h) + h) + (h + 1L) * d }
      // h is the complex state's width N
      { Name = "LRU"
        CSharp = fun d n -> Model.Input("x", d).Then(Blocks.Lru(n)).Build()
        FSharp = fun d n -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.lru n)
        Parameters = fun d n -> 4L * int64 n * int64 d + 2L * int64 n + int64 d }
      // h heads of key and value width 2, each with RetNet's decay gamma_h = 1 - 2^(-5-h), an output projection
      { Name = "multi-scale decays (RetNet's, no rotation)"
        CSharp = fun d h -> Model.Input("x", d).Attention(h, 2, 2, outFeatures = d, headDecays = retNetDecays h).Build()
        FSharp = fun d h ->
            Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Layer.attention { Duality.FSharp.Attention.linear h 2 2 with Out = Some d; Decay = Duality.FSharp.Decay.PerHead(List.ofArray (retNetDecays h)) })
        Parameters = fun d h -> 3L * int64 (2 * h) * int64 d + int64 d * int64 (2 * h) }
      // h is the RNN width D; one head, four taps, expansion 3
      { Name = "Hawk layer"
        CSharp = fun d h -> Model.Input("x", d).Then(Blocks.Hawk(h, 1, 4, 3)).Build()
        FSharp = fun d h -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.hawk h 1 4 3)
        Parameters = fun d h ->
            let d, h = int64 d, int64 h
            let recurrent = 2L * (d + 1L) * h + 5L * h + (2L * (h * h + h) + h) + (h + 1L) * d
            let mlp = 2L * (d + 1L) * (3L * d) + (3L * d + 1L) * d
            recurrent + mlp + 2L * d }
      // h heads of key and value width 2, decay rank 3, tau 16
      { Name = "GLA"
        CSharp = fun d h -> Model.Input("x", d).Then(Blocks.Gla(h, 2, 2, 3, 16.0)).Build()
        FSharp = fun d h -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.glaWith h (Some 2) (Some 2) 3 16.0 None)
        Parameters = fun d h ->
            let d, h, dk, dv, r = int64 d, int64 h, 2L, 2L, 3L
            2L * d * h * dk + d * h * dv + (d * r + r * h * dk + h * dk) + (d * h * dv + h * dv) + 2L * h * dv + h * dv * d }
      // h heads of key and value width 2
      { Name = "mLSTM"
        CSharp = fun d h -> Model.Input("x", d).Then(Blocks.Mlstm(h, 2, 2)).Build()
        FSharp = fun d h -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.mlstmWith h (Some 2) (Some 2) None)
        Parameters = fun d h ->
            let d, h, dk, dv = int64 d, int64 h, 2L, 2L
            d * h * (2L * dk + dv) + 2L * h * (d + 1L) + h * dv * (d + 1L) + 2L * h * dv + h * dv * d }
      // h heads of key width 2 and value width 3
      { Name = "RetNet"
        CSharp = fun d h -> Model.Input("x", d).Then(Blocks.RetNet(h, 2, 3)).Build()
        FSharp = fun d h -> Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.retNetWith h (Some 2) (Some 3) None)
        Parameters = fun d h -> let d, h = int64 d, int64 h in 2L * d * h * 2L + 3L * d * h * 3L }
      // inner width 2h with heads of width 2 (h heads), state 2, groups 1 or (h even) 2, four taps
      { Name = "Mamba-2"
        CSharp = fun d h -> Model.Input("x", d).Then(Blocks.Mamba2(2 * h, 2, 2, (if h % 2 = 0 then 2 else 1), 4)).Build()
        FSharp = fun d h ->
            Duality.FSharp.Model.build (Model.Input("x", d) |> Duality.FSharp.Blocks.mamba2With (Some(2 * h)) 2 2 (if h % 2 = 0 then 2 else 1) 4 None)
        Parameters = fun d h ->
            let g = if h % 2 = 0 then 2L else 1L
            let d, heads, e, n, k = int64 d, int64 h, 2L * int64 h, 2L, 4L
            d * (2L * e + 2L * g * n + heads) + (e + 2L * g * n) * (k + 1L) + 2L * heads + 2L * e + e * d } ]

/// Sizes and data of one draw: input width, state width, batch, time, weight seed, input seed.
type private Draw = { D: int; H: int; Batch: int; Time: int; WeightSeed: int; InputSeed: int }

let private draws =
    gen {
        let! d = Gen.choose (1, 6)
        let! h = Gen.choose (1, 6)
        let! batch = Gen.choose (1, 3)
        // both sides of the fused kernels' thresholds: 1 step, short, and beyond a 64-step chunk
        let! time = Gen.frequency [ 1, Gen.constant 1; 3, Gen.choose (2, 20); 1, Gen.choose (60, 140) ]
        let! weightSeed = Gen.choose (0, 10000)
        let! inputSeed = Gen.choose (0, 10000)
        return { D = d; H = h; Batch = batch; Time = time; WeightSeed = weightSeed; InputSeed = inputSeed }
    }
    |> Arb.fromGen

let private weighted (family: Family) (w: Draw) =
    InitializeWeights.Run(family.CSharp w.D w.H, w.WeightSeed, WeightInit.Perturbed)

let private inputsOf (w: Draw) = [| randomSequence (Random(w.InputSeed)) w.Batch w.Time w.D 1.0 |]

let private modes = [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ]

/// Parameter and input gradients of sum(y * probe), in the parameters' order, flattened.
let private gradients (g: Graph) mode (inputs: Sequence[]) (probe: Sequence) =
    let model = g.Compile(CompileOptions(DType = f64, Execution = mode))
    let x = (toTensor f64 inputs.[0]).requires_grad_(true)
    let y = model.Forward([| x |]).[0]
    backwardOf (fun () -> (y * toTensor f64 probe).sum())
    [ for struct (name, p) in model.named_parameters() -> name, ofTensorFlat p.grad ] @ [ "input", ofTensorFlat x.grad ]

/// gradients in float32, as float64 arrays.
let private gradients32 (g: Graph) mode (inputs: Sequence[]) (probe: Sequence) =
    let f32 = torch.ScalarType.Float32
    let model = g.Compile(CompileOptions(DType = f32, Execution = mode))
    let x = (toTensor f32 inputs.[0]).requires_grad_(true)
    let y = model.Forward([| x |]).[0]
    backwardOf (fun () -> (y * toTensor f32 probe).sum())
    [ for struct (name, p) in model.named_parameters() -> name, ofTensorFlat p.grad ] @ [ "input", ofTensorFlat x.grad ]

let private relative (expected: double[]) (actual: double[]) =
    let scale = expected |> Array.fold (fun m v -> max m (abs v)) 0.0
    Array.fold2 (fun m e a -> max m (abs (e - a))) 0.0 expected actual / (1.0 + scale)

/// float32's unit roundoff, 2^-24.
let private unitRoundoff32 = Math.ScaleB(1.0, -24)

/// The normalised output y_t = o_t / max(|nu_t|, 1), nu_t = sum_(s &lt;= t) w_ts (k_s . q_t) with w_ts = e^(g_s) and the
/// decays between s and t (per key channel, w_ts[j]): float32 forms nu_t with a rounding of u sum_s sum_j w_ts[j]
/// |k_s[j] q_t[j]|, which y, and every gradient through 1 / nu_t, carry relative to |nu_t|. Returns the largest
/// kappa_t = sum_s sum_j w_ts[j] |k_s[j] q_t[j]| / |nu_t| over the steps where |nu_t| > 1 (both sums are the
/// unnormalised attention with values 1, of q, k and of |q|, |k|; float64), and whether a step's |nu_t| is within
/// 30 u of that sum from the kink at 1.
let private normaliserConditioning heads (q: torch.Tensor) (k: torch.Tensor) (logDecay: torch.Tensor option) (logGate: torch.Tensor option) =
    let dk = int (q.shape.[2] / int64 heads)
    let sums (q: torch.Tensor) (k: torch.Tensor) =
        noGrad (fun () ->
            let ones = torch.ones([| q.shape.[0]; q.shape.[1]; int64 heads |], dtype = q.dtype)
            Duality.Kernels.GatedLinearAttentionFunction.Run(q, k, ones, Option.toObj logDecay, Option.toObj logGate,
                Duality.Kernels.GatedLinearAttentionFunction.Form(heads, dk, 1, false)))
    let nu = (sums q k).abs()
    let magnitude = sums (q.abs()) (k.abs())
    let kappa = torch.where(nu.gt(torch.tensor 1.0), magnitude / nu, torch.zeros_like nu).max().item<float>()
    let nearKink = (nu - 1.0).abs().le(30.0 * unitRoundoff32 * magnitude).any().item<bool>()
    kappa, nearKink

/// Every node's float64 value on these inputs (the reference), by node index: the graph's inputs (its first nodes)
/// themselves, then each node the reference evaluates.
let private nodeValues (g: Graph) (inputs: Sequence[]) : Sequence[] =
    let every = Graph.Create(g.Nodes, [ for i in Seq.length g.InputNodes .. g.Nodes.Count - 1 -> NodeId i ])
    Array.append inputs (ReferenceEvaluator.Evaluate(every, inputs))

/// The largest condition number of a normalised gated linear attention's n . q in the graph, given every node's value
/// (nodeValues): normaliserConditioning on the attention's inputs as the float64 reference computes them, 0 when it has
/// none. float32 forms each output of such an attention to about u kappa relative, whatever the algorithm.
let private graphConditioning (g: Graph) (values: Sequence[]) =
    let attentions = g.Nodes |> Seq.choose (function :? GatedLinearAttention as a when a.Normalised -> Some a | _ -> None) |> List.ofSeq
    if attentions.IsEmpty then 0.0
    else
        let valueOf (id: NodeId) = toTensor f64 values.[id.Index]
        attentions
        |> List.map (fun a ->
            let q = valueOf a.Query
            let perHead (l: torch.Tensor) = l.reshape(q.shape.[0], q.shape.[1], int64 a.Heads, l.shape.[2] / int64 a.Heads)
            let fixedDecays =
                if isNull a.HeadDecays then None
                else Some ((torch.tensor(a.HeadDecays.Data |> Array.ofSeq, dtype = f64)).log().view(1L, 1L, int64 a.Heads, 1L))
            let logDecay =
                match Option.ofNullable a.LogDecay, fixedDecays with
                | Some l, Some gammas -> Some ((perHead (valueOf l)) + gammas)
                | Some l, None -> Some (perHead (valueOf l))
                | None, Some gammas -> Some (gammas.expand(q.shape.[0], q.shape.[1], int64 a.Heads, 1L))
                | None, None -> None
            fst (normaliserConditioning a.Heads q (valueOf a.Key) logDecay (Option.ofNullable a.LogInputGate |> Option.map valueOf)))
        |> List.max

/// The first output in float64 from every execution mode, the step form, Auto with gradients recorded (the attention
/// families then run their fused loop as one autograd operation) and the streamer, named.
let private formsOf64 (g: Graph) (inputs: Sequence[]) =
    let tensors = inputs |> Array.map (toTensor f64)
    noGrad (fun () ->
        [ for mode in modes do
              let model = g.Compile(CompileOptions(DType = f64, Execution = mode))
              yield sprintf "%A" mode, ofTensor (model.Forward(tensors).[0])
          let model = g.Compile(CompileOptions.Float64)
          yield "step form", ofTensor (model.ToStepForm().Unroll(tensors).[0])
          yield "Auto, gradients recorded", withGrad (fun () -> use _ = torch.NewDisposeScope() in ofTensor (model.Forward(tensors).[0].detach()))
          yield "streamer", (LawsStreaming.stream64 (Duality.Streaming.Streamer.Create<float>(g, Array3D.length1 inputs.[0])) g inputs).[0] ])

let private formsLaws (family: Family) =
    [ testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 40 }
          (sprintf "%s: Auto = PerNode = TorchOps = step form = streamer = reference (float64, scaled error <= 1e-10)" family.Name) <|
          Prop.forAll draws (fun w ->
              let g = weighted family w
              let inputs = inputsOf w
              let expected = (ReferenceEvaluator.Evaluate(g, inputs)).[0]
              formsOf64 g inputs |> List.forall (fun (form, actual) -> within tolerance64 (scaledError expected actual) form))

      testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 40 }
          (sprintf "%s: float32 = reference (scaled error <= 1e-4, plus 100 u kappa with a normalised attention, kappa the condition number of its n . q, u = 2^-24), compiled and streamed" family.Name) <|
          Prop.forAll draws (fun w ->
              let g = weighted family w
              let inputs = inputsOf w
              let values = nodeValues g inputs
              let expected = values.[g.Outputs.[0].Index]
              let compiled = noGrad (fun () -> ofTensor (g.Compile(CompileOptions()).Forward(inputs |> Array.map (toTensor torch.ScalarType.Float32)).[0]))
              let streamed = (LawsStreaming.stream32 (Duality.Streaming.Streamer.Create<float32>(g, w.Batch)) g inputs).[0]
              let kappa = graphConditioning g values
              let bound = tolerance32 + 100.0 * unitRoundoff32 * kappa
              within bound (scaledError expected compiled) (sprintf "compiled (kappa %.3g)" kappa)
              && within bound (scaledError expected streamed) (sprintf "streamed (kappa %.3g)" kappa))

      testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 25 }
          (sprintf "%s: gradients of parameters and inputs agree across Auto, PerNode and TorchOps (float64, 1e-10)" family.Name) <|
          Prop.forAll draws (fun w ->
              let g = weighted family w
              let inputs = inputsOf w
              let probe = randomSequence (Random(w.InputSeed + 1)) w.Batch w.Time g.Widths.[g.Outputs.[0].Index] 1.0
              let baseline = gradients g ExecutionMode.TorchOps inputs probe
              [ ExecutionMode.Auto; ExecutionMode.PerNode ]
              |> List.forall (fun mode ->
                  List.forall2 (fun (name, e) (name', a) ->
                      name = name' && within tolerance64 (relative e a) (sprintf "%A, gradient of %s" mode name))
                      baseline (gradients g mode inputs probe)))

      testCase (sprintf "%s: parameter count = the paper's formula, and the F# block is the C# block" family.Name) <| fun () ->
          for d in 1 .. 6 do
              for h in 1 .. 6 do
                  let g = family.CSharp d h
                  Expect.equal (ParameterCounts.Total g) (family.Parameters d h) (sprintf "d %d, h %d" d h)
                  Expect.equal (family.FSharp d h) g (sprintf "F# = C#, d %d, h %d" d h) ]

/// Inputs from 1e-12 to 1e10 (weights of unit scale): gates saturate, log-decays and log input gates reach 1e10 and
/// sums of squares 1e20, on both sides of every place a magnitude could overflow, underflow or cancel.
let private inputScales = [ 1e-12; 1e-6; 1.0; 1e2; 1e4; 1e6; 1e10 ]

/// max |x| over flattened values.
let private largestOf (x: double[]) = x |> Array.fold (fun m v -> max m (abs v)) 0.0

/// max |e - a| over flattened values; infinity when a holds a value that is not finite.
let private worstDifference (expected: double[]) (actual: double[]) =
    Array.fold2 (fun m e a -> if Double.IsFinite a then max m (abs (e - a)) else infinity) 0.0 expected actual

/// max |e - a| / max |e| over flattened values (|e - a| when e is all 0); infinity when a holds a value that is not finite.
let private relativeFlat (expected: double[]) (actual: double[]) =
    let scale = largestOf expected
    if scale = 0.0 then worstDifference expected actual else worstDifference expected actual / scale

/// float32's resolution at the bottom of its range, with room for a block's sums: 2^-100 (its smallest normal is 2^-126).
let private float32Floor = 2.0 ** -100.0

/// Whether every node's values on these inputs lie well within float32's range (the float64 reference): each node's
/// largest magnitude 0 or between 2^-100 and 1/1000 of float32's largest value.
let private fitsFloat32 (g: Graph) (inputs: Sequence[]) =
    nodeValues g inputs
    |> Array.skip (Seq.length g.InputNodes)
    |> Array.forall (fun y -> let m = maxAbs y in m = 0.0 || (m >= float32Floor && m < float Single.MaxValue / 1e3))

let private finite (y: Sequence) = y |> Seq.cast<float> |> Seq.forall Double.IsFinite

let private scaleLaws (family: Family) =
    let d, h = 6, 2
    let g = InitializeWeights.Run(family.CSharp d h, 7, WeightInit.Perturbed)
    let inputsAt scale = [| randomSequence (Random(11)) 2 70 d scale |]
    [ testCase (sprintf "%s at input scales 1e-12 .. 1e10: Auto = PerNode = TorchOps = step form = streamer = reference, and gradients agree across modes (float64, relative error <= 1e-10; a gradient far below the rest within 1e-13 of the largest)" family.Name) <| fun () ->
          for scale in inputScales do
              let inputs = inputsAt scale
              let expected = (ReferenceEvaluator.Evaluate(g, inputs)).[0]
              Expect.isTrue (finite expected) (sprintf "the reference is finite at %g" scale)
              for form, actual in formsOf64 g inputs do
                  Expect.isLessThanOrEqual (relativeError expected actual) tolerance64 (sprintf "%s at input scale %g" form scale)
              let probe = randomSequence (Random(12)) 2 70 g.Widths.[g.Outputs.[0].Index] 1.0
              let baseline = gradients g ExecutionMode.TorchOps inputs probe
              // a gradient far below the rest (a saturated gate's, a decay's at e^-10000) is a difference of terms of the
              // rest's size: it is held to their rounding
              let largest = baseline |> List.map (snd >> largestOf) |> List.max
              for mode in [ ExecutionMode.Auto; ExecutionMode.PerNode ] do
                  List.iter2 (fun (name, e: double[]) (_, a: double[]) ->
                      let own = largestOf e
                      let worst = worstDifference e a
                      Expect.isLessThanOrEqual worst (max (tolerance64 * own) (1e-13 * largest))
                          (sprintf "%A, gradient of %s at input scale %g (largest %.3g here, %.3g of all)" mode name scale own largest))
                      baseline (gradients g mode inputs probe)

      testCase (sprintf "%s at input scales 1e-12 .. 1e10 in float32: Auto's gradients within 1e-3 of the float64 gradient or within 10 x libtorch's own float32 autograd (TorchOps) where float32 itself loses digits; one below 1e-6 of the largest within 1e-2 of the largest; where every value fits float32" family.Name) <| fun () ->
          for scale in inputScales do
              let inputs = inputsAt scale
              if fitsFloat32 g inputs then
                  let probe = randomSequence (Random(12)) 2 70 g.Widths.[g.Outputs.[0].Index] 1.0
                  let exact = gradients g ExecutionMode.TorchOps inputs probe
                  let largest = exact |> List.map (snd >> largestOf) |> List.max
                  let composite = gradients32 g ExecutionMode.TorchOps inputs probe
                  let fused = gradients32 g ExecutionMode.Auto inputs probe
                  for (name, e), ((_, c), (_, a)) in List.zip exact (List.zip composite fused) do
                      let own = largestOf e
                      // a gradient far below the rest (a scale-invariant norm's input, a saturated gate) is a difference
                      // of terms of the rest's size: float32 holds it to their rounding
                      let allowed = if own < 1e-6 * largest then 1e-2 * largest else max (1e-3 * own) (10.0 * worstDifference e c)
                      Expect.isLessThanOrEqual (worstDifference e a) allowed
                          (sprintf "Auto float32, gradient of %s at input scale %g (largest %.3g here, %.3g of all; TorchOps float32 off by %.3g)"
                              name scale own largest (worstDifference e c))

      testCase (sprintf "%s at input scales 1e-12 .. 1e10 in float32: every mode and the streamer within 1e-4 of the reference (relative) where every value fits float32, and where one does not either non-finite or within 1e-4 + 2^-100 (never finite and wrong)" family.Name) <| fun () ->
          for scale in inputScales do
              let inputs = inputsAt scale
              let expected = (ReferenceEvaluator.Evaluate(g, inputs)).[0]
              let fits = fitsFloat32 g inputs
              let tensors = inputs |> Array.map (toTensor torch.ScalarType.Float32)
              let forms =
                  noGrad (fun () ->
                      [ for mode in modes do
                            yield sprintf "%A" mode, ofTensor (g.Compile(CompileOptions(Execution = mode)).Forward(tensors).[0])
                        yield "streamer", (LawsStreaming.stream32 (Duality.Streaming.Streamer.Create<float32>(g, 2)) g inputs).[0] ])
              for form, actual in forms do
                  if fits then
                      Expect.isLessThanOrEqual (relativeError expected actual) tolerance32 (sprintf "%s at input scale %g (every value fits float32)" form scale)
                  // beyond float32's range a result may be non-finite (loud) or rounded at the bottom of the range, never finite and wrong
                  elif finite actual then
                      let allowed = tolerance32 * maxAbs expected + float32Floor
                      let absolute = if maxAbs expected = 0.0 then relativeError expected actual else relativeError expected actual * maxAbs expected
                      Expect.isLessThanOrEqual absolute allowed
                          (sprintf "%s at input scale %g (a value beyond float32's range, the result finite)" form scale)
      ]

let private projection (g: Graph) name (weight: float[,]) (bias: float[]) =
    g.WithWeights(name, dict [ "Weight", DoubleTensor.Matrix weight; "Bias", DoubleTensor.Vector bias ] |> Collections.Generic.Dictionary)

let private toTensor1 (v: DoubleTensor) = torch.tensor(Array.ofSeq v.Data, dtype = f64)

/// One sequence of scalars as [1, time, 1].
let private scalars (xs: float list) = Array3D.init 1 xs.Length 1 (fun _ t _ -> xs.[t])

/// The worked values of a graph's first output feature, from the reference, every execution mode, the step form and
/// the streamer (float64).
let private worked (g: Graph) (x: Sequence) (expected: float list) =
    let check form (y: Sequence) =
        expected |> List.iteri (fun t e -> Expect.floatClose Accuracy.veryHigh y.[0, t, 0] e (sprintf "%s, step %d" form t))
    check "reference" (ReferenceEvaluator.Evaluate(g, [| x |])).[0]
    for mode in modes do
        check (sprintf "%A" mode) (noGrad (fun () -> ofTensor (g.Compile(CompileOptions(DType = f64, Execution = mode)).Forward([| toTensor f64 x |]).[0])))
    check "step form" (noGrad (fun () -> ofTensor (g.Compile(CompileOptions.Float64).ToStepForm().Unroll([| toTensor f64 x |]).[0])))
    check "streamer" (LawsStreaming.stream64 (Duality.Streaming.Streamer.Create<float>(g, 1)) g [| x |]).[0]

/// e^x for 0 <= x <= 60 in System.Decimal (28 digits), by its Taylor series: independent of the float64 code under test.
let private expDecimal (x: decimal) =
    let mutable term, sum, n = 1m, 1m, 0m
    while term <> 0m do
        n <- n + 1m
        term <- term * x / n
        sum <- sum + term
    sum

/// log x in System.Decimal: x = 2^k y with y in [2/3, 4/3), log y = 2 atanh s = 2 (s + s^3/3 + ...), s = (y - 1) / (y + 1).
let private logDecimal (x: decimal) =
    let atanh (s: decimal) =
        let mutable power, sum, n = s, s, 1m
        while power <> 0m do
            power <- power * s * s
            n <- n + 2m
            sum <- sum + power / n
        sum
    let mutable y, k = x, 0m
    while y >= 4m / 3m do
        y <- y / 2m
        k <- k + 1m
    while y < 2m / 3m do
        y <- y * 2m
        k <- k - 1m
    k * 2m * atanh (1m / 3m) + 2m * atanh ((y - 1m) / (y + 1m))

/// log sigmoid z and log softplus z, independently: in Decimal for |z| <= 25; beyond, with u = e^-|z| (u = 0 from
/// |z| = 800, below every double), log(1 + u) = u - u^2/2 and the series log softplus z = z - u/2 (z &lt; 0) or
/// log z + u / z (z &gt; 0), whose next terms are below 1e-30 relative.
let private logSigmoidAndLogSoftplus (z: float) =
    let a = abs z
    if a <= 25.0 then
        let tail = logDecimal (1m + 1m / expDecimal (decimal a))
        float (decimal (min z 0.0) - tail), float (logDecimal (decimal (max z 0.0) + tail))
    else
        let u = if a >= 800.0 then 0.0 else 1.0 / float (expDecimal (decimal a))
        let tail = u - u * u / 2.0
        min z 0.0 - tail, (if z > 0.0 then float (logDecimal (decimal z)) + tail / z else z - u / 2.0)

/// log(1 + u) for u >= 0 to full precision (Goldberg: the rounding of 1 + u divided out).
let private log1p (u: float) =
    let w = 1.0 + u
    if w = 1.0 then u else log w * u / (w - 1.0)

/// The derivatives: log sigmoid' z = sigmoid(-z); log softplus' z = sigmoid z / softplus z, written for z &lt; 0 as
/// (u / log(1 + u)) / (1 + u) with u = e^z, which is 1 where u underflows.
let private logSigmoidSlope (z: float) = if z >= 0.0 then (let u = exp -z in u / (1.0 + u)) else 1.0 / (1.0 + exp z)

let private logSoftplusSlope (z: float) =
    if z >= 0.0 then 1.0 / (1.0 + exp -z) / (z + log1p (exp -z))
    else
        let u = exp z
        if u = 0.0 then 1.0 else u / log1p u / (1.0 + u)

/// The log activations' test points: every integer in [-1000, 1000], steps of 0.01 over [-30, 30], and both sides
/// of log softplus's change of form at -20.
let private logActivationPoints =
    Array.concat [ [| for i in -1000 .. 1000 -> float i |]; [| for i in -3000 .. 3000 -> float i / 100.0 |]
                   [| -20.000000001; -19.999999999; -745.5; -1e-300; 1e-300 |] ]

/// |actual - expected| over |expected|, with the smallest normal number of the precision as the floor of the
/// denominator: subnormal values (|log sigmoid z| = e^-z beyond z = 708) carry fewer digits.
let private relativeTo (smallestNormal: float) (expected: float) (actual: float) =
    if Double.IsFinite actual then abs (actual - expected) / max (abs expected) smallestNormal else infinity

/// Heads, key and value widths, steps and batch rows for the gated linear attention's kernels: key 16 by value 17 over 64
/// steps is past the parallel threshold (steps x key x value >= 2^14); value 17 leaves a column beyond the vectors, value 1
/// has none in a vector; 1 to 9 steps and 60 to 70 leave every remainder of four steps. Where 512-bit vectors run at full
/// rate the loops take the columns two of those at a time, then two Vector<T> at a time, then one by one: key 33 and
/// value 49 reach 512-bit pairs and a column beyond them (float32: 32 + 1, 32 + 16 + 1; float64: 32 + 1, 48 + 1), value 25
/// all three in float64 (16 + 8 + 1).
let private attentionSizes =
    gen {
        let! heads = Gen.choose (1, 3)
        let! dk = Gen.elements [ 1; 3; 8; 16; 33 ]
        let! dv = Gen.elements [ 1; 5; 16; 17; 25; 49 ]
        let! time = Gen.frequency [ 3, Gen.choose (1, 9); 2, Gen.choose (60, 70) ]
        let! batch = Gen.choose (1, 2)
        return heads, dk, dv, time, batch
    }

/// max |expected - actual| / (1 + max |expected|) between two tensors.
let private scaledTensorError (expected: torch.Tensor) (actual: torch.Tensor) =
    ((expected - actual).abs().max() / (1.0 + expected.abs().max().item<float>())).item<float>()

/// Gradients of the gated linear attention's reverse pass (one autograd operation over the fused loop) against autograd
/// through its chunks of 64 steps and through the masked form (one chunk), float64 within 1e-10, and float32 against
/// float64. Decay: 0 (none), 1 (per head) or the key width (per key channel), the log-decays -strength softplus(z).
let private reversePassAgrees (heads, dk, dv, time, batch, decay, strength: float, gated, normalised, seed: int) =
    let (b, t, h) = (int64 batch, int64 time, int64 heads)
    use generator = new torch.Generator(uint64 seed)
    let draw (shape: int64[]) = torch.randn(shape, dtype = f64, generator = generator)
    let q, k, v = draw [| b; t; h * int64 dk |], draw [| b; t; h * int64 dk |], draw [| b; t; h * int64 dv |]
    let logDecay = if decay = 0 then None else Some(-strength * torch.nn.functional.softplus (draw [| b; t; h; int64 decay |]))
    let logGate = if gated then Some(3.0 * draw [| b; t; h |]) else None
    let probe = draw [| b; t; h * int64 dv |]
    let leaves dtype =
        [ q; k; v; yield! Option.toList logDecay; yield! Option.toList logGate ]
        |> List.map (fun x -> x.detach().to_type(dtype).requires_grad_(true))
    // the module's reading of the chunks' rows, scaled by e^(-m_t): y = o e^(m) or o / max(|n . q|, e^(-m))
    let chunked chunk (inputs: torch.Tensor list) =
        let heads' (x: torch.Tensor) = x.view(b, t, h, -1L).transpose(1L, 2L)
        let q', k', v' = heads' inputs.[0], heads' inputs.[1], heads' inputs.[2]
        let v' = if normalised then torch.cat([| v'; torch.ones([| b; h; t; 1L |], dtype = v'.dtype) |], -1L) else v'
        let decay' = logDecay |> Option.map (fun _ -> inputs.[3].transpose(1L, 2L))
        let gate' = logGate |> Option.map (fun _ -> inputs.[inputs.Length - 1].transpose(1L, 2L))
        let result =
            Duality.Kernels.GatedLinearAttentionChunks.Run(q', k', v', Option.toObj decay', Option.toObj gate', System.Nullable(), chunk)
        let o = result.Output
        let y =
            if normalised then
                let n = o.narrow(-1L, int64 dv, 1L).abs()
                let floor = if isNull result.Shift then torch.ones_like n else result.Shift.neg().exp()
                o.narrow(-1L, 0L, int64 dv) / torch.maximum(n, floor)
            elif isNull result.Shift then o
            else o * result.Shift.exp()
        y.transpose(1L, 2L).reshape(b, t, h * int64 dv)
    let recurrent (inputs: torch.Tensor list) =
        Duality.Kernels.GatedLinearAttentionFunction.Run(inputs.[0], inputs.[1], inputs.[2],
            (logDecay |> Option.map (fun _ -> inputs.[3]) |> Option.toObj),
            (logGate |> Option.map (fun _ -> inputs.[inputs.Length - 1]) |> Option.toObj),
            Duality.Kernels.GatedLinearAttentionFunction.Form(heads, dk, dv, normalised))
    let gradients dtype form =
        withGrad (fun () ->
            let inputs = leaves dtype
            backwardOf (fun () -> ((form inputs: torch.Tensor) * probe.to_type(dtype)).sum())
            inputs |> List.map (fun x -> x.grad.to_type(f64)))
    let names = [ "q"; "k"; "v"; yield! (if decay = 0 then [] else [ "log-decay" ]); yield! (if gated then [ "log-gate" ] else []) ]
    let reverse = gradients f64 recurrent
    let agree tolerance label (other: torch.Tensor list) =
        List.forall2 (fun name (e, a) -> within tolerance (scaledTensorError e a) (sprintf "%s, gradient of %s" label name)) names (List.zip other reverse)
    agree tolerance64 "chunks of 64" (gradients f64 (chunked 64L))
    && agree tolerance64 "masked form" (gradients f64 (chunked t))
    // float32 against float64 within 1e-4, scaled, or 1e-3 with a gate and the normaliser (whose gradients of q and k
    // cancel to 0 where |n . q| > 1 and the key has one entry); with the normaliser, plus 100 u kappa, u = 2^-24 and kappa
    // the condition number of n . q (normaliserConditioning), which float32 forms to u kappa relative and the gradients
    // carry through 1 / (n . q)^2; not compared where a step's |n . q| may round to the other side of the divisor's
    // kink at 1, where the gradient jumps
    && (let kappa, nearKink = if normalised then normaliserConditioning heads q k logDecay logGate else 0.0, false
        let bound = (if gated && normalised then 1e-3 else tolerance32) + 100.0 * unitRoundoff32 * kappa
        nearKink
        || List.forall2 (fun name (e, a) -> within bound (scaledTensorError e a) (sprintf "float32, gradient of %s (kappa %.3g)" name kappa))
               names (List.zip reverse (gradients torch.ScalarType.Float32 recurrent)))

/// Errors of the normalised gated linear attention in float32 against float64, scaled, with their bounds: its output as one
/// autograd operation, compiled and as a streamer, and the largest of the gradients of q, k, v, the log-decays and the
/// log-gates, where each step dominates its state (log-decays
/// -30 (1 + softplus(z)), every gate 8, so m_t = 8) and its query is nearly orthogonal to its key (k_t . q_t = fraction |k_t| |q_t|).
let private dominatedStepErrors (fraction: float) (seed: int) =
    let (b, t, h, dk, dv) = (1L, 40L, 2L, 16L, 16L)
    use generator = new torch.Generator(uint64 seed)
    let draw (shape: int64[]) = torch.randn(shape, dtype = f64, generator = generator)
    let k = draw [| b; t; h; dk |]
    let q =
        let raw = draw [| b; t; h; dk |]
        let along = (raw * k).sum(-1L, keepdim = true) / (k * k).sum(-1L, keepdim = true)
        let across = raw - along * k
        across + fraction * torch.linalg.norm(across, dims = [| -1L |], keepdim = true) / torch.linalg.norm(k, dims = [| -1L |], keepdim = true) * k
    let v = draw [| b; t; h * dv |]
    let logDecay = -30.0 * (1.0 + torch.nn.functional.softplus (draw [| b; t; h; 1L |]))
    let logGate = 8.0 * torch.ones([| b; t; h |], dtype = f64)
    let probe = draw [| b; t; h * dv |]
    let run dtype =
        withGrad (fun () ->
            // inputs rounded to float32 for both runs: float64 then computes the float32 inputs' function exactly, and the
            // difference is the float32 computation's own error (k . q itself moves by a rounding of |k| |q| when rounded)
            let leaves =
                ([ q.reshape(b, t, h * dk); k.reshape(b, t, h * dk); v; logDecay; logGate ]: torch.Tensor list)
                |> List.map (fun (x: torch.Tensor) -> x.detach().to_type(torch.ScalarType.Float32).to_type(dtype).requires_grad_(true))
            let y =
                Duality.Kernels.GatedLinearAttentionFunction.Run(leaves.[0], leaves.[1], leaves.[2], leaves.[3], leaves.[4],
                    Duality.Kernels.GatedLinearAttentionFunction.Form(int h, int dk, int dv, true))
            backwardOf (fun () -> (y * probe.to_type(dtype)).sum())
            y.detach().to_type(f64) :: (leaves |> List.map (fun x -> x.grad.to_type(f64))))
    let errors =
        List.map2 scaledTensorError
            (run f64) (run torch.ScalarType.Float32)
    // the same attention as a graph over x_t = (q, k, v, l, g), compiled (the fused loop) and as a streamer, in float32
    // against the reference evaluator on the rounded inputs
    let x =
        ofTensor (torch.cat([| q.reshape(b, t, h * dk); k.reshape(b, t, h * dk); v; logDecay.reshape(b, t, h); logGate |], -1L)
                      .to_type(torch.ScalarType.Float32))
    let (hk, hv) = (int (h * dk), int (h * dv))
    let g =
        Model.Input("x", 2 * hk + hv + 2 * int h)
            .GatedLinearAttention(int h, int dk, int dv, (fun q -> q.Slice(0, hk)), (fun k -> k.Slice(hk, hk)), (fun v -> v.Slice(2 * hk, hv)),
                                  (fun l -> l.Slice(2 * hk + hv, int h)), (fun g -> g.Slice(2 * hk + hv + int h, int h)), true).Build()
    let expected = (ReferenceEvaluator.Evaluate(g, [| x |])).[0]
    let fused = noGrad (fun () -> ofTensor (g.Compile(CompileOptions(DType = torch.ScalarType.Float32)).Forward([| toTensor torch.ScalarType.Float32 x |]).[0]))
    let streamed = (LawsStreaming.stream32 (Duality.Streaming.Streamer.Create<float32>(g, 1)) g [| x |]).[0]
    [ "output as one autograd operation", List.head errors, 1e-6; "output compiled (the fused loop)", scaledError expected fused, 1e-6
      "output as a streamer", scaledError expected streamed, 1e-6; "gradients", List.max (List.tail errors), 5e-5 ]

/// The input's and every weight's gradient of sum(model(x)^2), flattened (a weight read by nothing has none).
let private inputAndWeightGradients (model: Duality.Torch.CompiledGraph) (x: torch.Tensor) =
    let input = x.detach().requires_grad_(true)
    backwardOf (fun () -> model.forward(input).square().sum())
    Array.concat [ yield ofTensorFlat input.grad
                   for struct (_, p) in model.named_parameters() do if not (isNull p.grad) then yield ofTensorFlat p.grad ]

let tests =
    testList "blocks" [
        for family in families do yield! formsLaws family
        for family in families do yield! scaleLaws family

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 40 }
            "an attention whose query, key or value is a Concat of one slice per head of one node (Mamba-2's groups, any slices in any order), or a slice of wider rows, reads them where they lie, forward and backward, and takes a skip D v added to its output (Mamba-2's D x) into the same pass: = its nodes one by one (float64; forward 1e-13, exact but for the decay's log sigmoid in the elementwise pass; gradients 1e-10) and the reference (1e-10)" <|
            Prop.forAll (Arb.fromGen (Gen.zip3 (Gen.choose (1, 4)) (Gen.elements [ 1; 3; 70 ]) (Gen.choose (0, 10000)))) (fun (heads, time, seed) ->
                let random = Random(seed)
                // value widths on both sides of a vector of float64 (4 or 8 lanes), which the skip's pass reads a vector at a time
                let (dk, dv, width) = (random.Next(1, 4), random.Next(1, 10), 10)
                // each of q, k and v: head h reads a slice of "shared" starting anywhere, overlapping or repeated; or one slice of
                // "wide" (heads side by side, read in place within its rows); or its own projection, read packed; an input gate as
                // Mamba-2's
                // the Concats' slices from "shared", or from "wide" beside the slices of it (Mamba-2's B, C and x)
                let (concatSource, concatWidth) = if random.Next(2) = 0 then ("shared", width) else ("wide", 40)
                let slices part w = [| for h in 0 .. heads - 1 -> Func<SequenceBuilder, SequenceBuilder>(fun b -> b.From(concatSource).Slice(random.Next(0, concatWidth - w + 1), w, name = sprintf "%s%d" part h)) |]
                // a decay per head or per key channel
                let decayWidth = if random.Next(2) = 0 then heads else heads * dk
                // the branch's node: "a/<part>/<part>p", "<part>s" or the Concat "<part>"; branches sliced from "wide" are read
                // within its rows when two or three are
                let kinds = [| for _ in 1 .. 3 -> random.Next(3) |]
                let branch index part w (b: SequenceBuilder) =
                    match kinds.[index] with
                    | 0 -> b.Projection(heads * w, name = part + "p")
                    | 1 -> b.From("wide").Slice(random.Next(0, 40 - heads * w + 1), heads * w, name = part + "s")
                    | _ -> b.Concat(part, slices part w)
                let value = "a/value/v" + (match kinds.[2] with 0 -> "p" | 1 -> "s" | _ -> "")
                let withSkip = random.Next(2) = 0
                let g =
                    let attention =
                        Model.Input("x", 3).Projection(width, name = "shared").From("x").Projection(40, name = "wide").From("x")
                            .GatedLinearAttention(heads, dk, dv, branch 0 "q" dk, branch 1 "k" dk, branch 2 "v" dv,
                                                  (fun l -> l.Projection(decayWidth).LogSigmoid()), (fun i -> i.Projection(heads)), random.Next(2) = 0, name = "a")
                    let built = (if withSkip then attention.Add((fun s -> s.From(value).ChannelScale(name = "D")), name = "skip") else attention).Build()
                    InitializeWeights.Run(built, seed, WeightInit.Perturbed)
                let x = toTensor f64 (randomSequence random 2 time 3 1.0)
                let (fused, plain) = (g.Compile(CompileOptions.Float64), g.Compile(CompileOptions(DType = f64, Execution = ExecutionMode.PerNode)))
                let group = fused.FusedGroups |> Seq.tryFind (fun group -> group.Node = (if withSkip then "skip" else "a"))
                let (y, expected) = noGrad (fun () -> ofTensor (fused.forward(x)), ofTensor (plain.forward(x)))
                let reference = (ReferenceEvaluator.Evaluate(g, [| ofTensor x |])).[0]
                // the input's and every weight's gradient ("shared" or "wide" may be read by nothing, and have none)
                let gradient (model: Duality.Torch.CompiledGraph) = inputAndWeightGradients model x
                let (dx, expectedDx) = (gradient fused, gradient plain)
                // without a Concat of slices, a slice of "wide" beside another or beside a Concat of its slices, or a skip, there is no group
                let wideReaders = (kinds |> Array.filter ((=) 1) |> Array.length) + (if concatSource = "wide" && Array.contains 2 kinds then 1 else 0)
                let shared = Array.contains 2 kinds || (Array.contains 1 kinds && wideReaders >= 2)
                (match group with
                 | Some group ->
                     (shared || withSkip) && (group.Fused, group.NodeByNode) = (2L, 0L)
                     && group.Kind = (if withSkip then "attention reading shared slices, with the skip D v" else "attention reading shared slices")
                 | None -> not shared && not withSkip)
                && within 1e-13 (scaledError expected y) "= node by node" && within tolerance64 (scaledError reference y) "= the reference"
                && within tolerance64 (relative expectedDx dx) "the gradients = node by node")

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 30 }
            "a projection and a channel scale added, each read only by the Add (the LRU's C h + D x), run as one group, the product added into the scaled skip, with and without gradients: = its nodes one by one (float64, 1e-12 forward, 1e-10 gradients), either order, with or without a bias; read by another node, the projection runs by itself" <|
            Prop.forAll (Arb.fromGen (Gen.zip3 (Gen.elements [ 1; 5; 70 ]) (Gen.choose (1, 40)) (Gen.choose (0, 10000)))) (fun (time, width, seed) ->
                let random = Random(seed)
                let (bias, projectionFirst, readElsewhere) = (random.Next(2) = 0, random.Next(2) = 0, random.Next(4) = 0)
                let g =
                    let h = Model.Input("x", width).Projection(2 * width + 1, name = "h").Tanh(name = "t")
                    let projection (b: SequenceBuilder) = b.Projection(width, bias = bias, name = "C")
                    let scaled (b: SequenceBuilder) = b.From("x").ChannelScale(name = "D")
                    let added =
                        if projectionFirst then (projection h).Add((fun b -> scaled b), name = "skip")
                        else (scaled h).Add((fun b -> projection (b.From("t"))), name = "skip")
                    let c = if projectionFirst then "C" else "skip/C"
                    let built = if readElsewhere then added.Add((fun b -> b.From(c).Scale(0.5)), name = "again").Build() else added.Build()
                    InitializeWeights.Run(built, seed, WeightInit.Perturbed)
                let x = toTensor f64 (randomSequence random 2 time width 1.0)
                let (fused, plain) = (g.Compile(CompileOptions.Float64), g.Compile(CompileOptions(DType = f64, Execution = ExecutionMode.PerNode)))
                let (y, expected) = noGrad (fun () -> ofTensor (fused.forward(x)), ofTensor (plain.forward(x)))
                let gradient (model: Duality.Torch.CompiledGraph) = inputAndWeightGradients model x
                let (dx, expectedDx) = (gradient fused, gradient plain)
                let group = fused.FusedGroups |> Seq.tryFind (fun group -> group.Kind = "projection + scaled skip")
                (match group with
                 | Some group -> not readElsewhere && group.Node = "skip" && (group.Fused, group.NodeByNode) = (2L, 0L)
                 | None -> readElsewhere)
                && within 1e-12 (scaledError expected y) "forward = node by node"
                && within tolerance64 (relative expectedDx dx) "the gradients = node by node")

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 40 }
            "elementwise nodes (log sigmoid, softplus, sigmoid, SiLU, tanh, ReLU, the decay normaliser, scales, channel scales, sums) each read only within their group run without gradients as one pass: = its nodes one by one (float64 1e-12 scaled, float32 1e-5) and the reference (1e-10), at widths below and above a tile, and sizes below and above the parallel threshold; with gradients its nodes run one by one (gradients = node by node); a node also read by a projection is no group's interior" <|
            Prop.forAll (Arb.fromGen (Gen.zip3 (Gen.elements [ (1, 3); (70, 1); (70, 17); (1100, 40); (3, 1100) ]) (Gen.choose (1, 6)) (Gen.choose (0, 10000)))) (fun ((time, width), length, seed) ->
                let random = Random(seed)
                let kinds = [| ActivationKind.LogSigmoid; ActivationKind.Softplus; ActivationKind.Sigmoid; ActivationKind.SiLU; ActivationKind.Tanh; ActivationKind.ReLU |]
                // operands "a" and "b" (projections of x), then steps "s0", "s1", ... each reading earlier ones
                let mutable chain = Model.Input("x", 3).Projection(width, name = "a").From("x").Projection(width, name = "b")
                let names = ResizeArray [ "a"; "b" ]
                for i in 0 .. length - 1 do
                    let (source, name) = (names.[random.Next(names.Count)], sprintf "s%d" i)
                    chain <-
                        match random.Next(5) with
                        | 0 -> chain.From(source).Activation(kinds.[random.Next(kinds.Length)], name)
                        // the decay normaliser's argument is a log-decay, at most 0
                        | 1 -> chain.From(source).Softplus(name = name + "p").Scale(-1.0, name = name + "n").Activation(ActivationKind.DecayNormaliser, name)
                        | 2 -> chain.From(source).Scale(random.NextDouble() * 4.0 - 2.0, name = name)
                        | 3 -> chain.From(source).ChannelScale(name = name)
                        | _ -> chain.From(source).Add(names.[random.Next(names.Count)], name = name)
                    names.Add name
                // a step also read by a projection (added to the output), sometimes
                let outside = if random.Next(3) = 0 then Some names.[2 + random.Next(names.Count - 2)] else None
                let g =
                    let built = match outside with
                                | Some step -> chain.Add((fun b -> b.From(step).Projection(width, name = "elsewhere")), name = "out").Build()
                                | None -> chain.Build()
                    InitializeWeights.Run(built, seed, WeightInit.Perturbed)
                let x = randomSequence random 2 time 3 1.0
                let compile dtype execution = g.Compile(CompileOptions(DType = dtype, Execution = execution))
                let (fused, plain) = (compile torch.float64 ExecutionMode.Auto, compile torch.float64 ExecutionMode.PerNode)
                let run (model: Duality.Torch.CompiledGraph) dtype = noGrad (fun () -> ofTensor (model.forward(toTensor dtype x)))
                let (y, expected) = (run fused torch.float64, run plain torch.float64)
                let reference = (ReferenceEvaluator.Evaluate(g, [| x |])).[0]
                let (y32, expected32) = (run (compile torch.float32 ExecutionMode.Auto) torch.float32, run (compile torch.float32 ExecutionMode.PerNode) torch.float32)
                let gradient (model: Duality.Torch.CompiledGraph) = inputAndWeightGradients model (toTensor torch.float64 x)
                let (dx, expectedDx) = (gradient fused, gradient plain)
                let groups = fused.FusedGroups |> Seq.filter (fun group -> group.Kind = "elementwise chain") |> Seq.toList
                let readers name = g.Nodes |> Seq.filter (fun n -> n.Sources |> Seq.exists (fun s -> g.Nodes.[s.Index].Name = name)) |> Seq.map (fun n -> n.Name) |> Seq.toList
                let interiorReadOnlyWithin (group: Duality.Torch.FusedGroup) =
                    group.Nodes |> Seq.filter ((<>) group.Node) |> Seq.forall (fun n -> readers n |> List.forall (fun r -> Seq.contains r group.Nodes))
                groups |> List.forall (fun group -> (group.Fused, group.NodeByNode) = (1L, 1L) && interiorReadOnlyWithin group)
                && (match outside with
                    | Some step -> groups |> List.forall (fun group -> group.Node = step || not (Seq.contains step group.Nodes))
                    | None -> true)
                && within 1e-12 (scaledError expected y) "forward = node by node"
                && within tolerance64 (scaledError reference y) "forward = the reference"
                && within 1e-5 (scaledError expected32 y32) "float32 forward = node by node"
                && within 1e-12 (relative expectedDx dx) "the gradients = node by node")

        testProperty "the elementwise pass's log sigmoid and softplus from -1e4 to 1e4 (0, subnormal and 1e-8 arguments too): within 2e-15 of the reference's value relative to it, or 1e-300 (float64); within 6e-7 of it relative to the larger of it and 1 (float32)" <| fun () ->
            let arguments = [| -1e4; -700.0; -100.0; -40.0; -20.0; -3.0; -1.0; -1e-8; -0.0; 0.0; 1e-310; 1e-8; 0.5; 1.0; 3.0; 20.0; 40.0; 100.0; 700.0; 1e4 |]
            let x : Sequence = Array3D.init 1 1 arguments.Length (fun _ _ i -> arguments.[i])
            [ ActivationKind.LogSigmoid; ActivationKind.Softplus ] |> List.forall (fun kind ->
                let g = Model.Input("x", arguments.Length).Activation(kind, "f").Build()
                let expected = (ReferenceEvaluator.Evaluate(g, [| x |])).[0]
                let run dtype =
                    let model = g.Compile(CompileOptions(DType = dtype))
                    let y = noGrad (fun () -> ofTensor (model.forward(toTensor dtype x)))
                    if (model.FusedGroups |> Seq.exactlyOne).Fused <> 1L then failwithf "%A did not run as the elementwise pass" kind
                    y
                let (y64, y32) = (run torch.float64, run torch.float32)
                Seq.forall2 (fun (e: float) (a: float) -> abs (a - e) <= 2e-15 * abs e + 1e-300) (Seq.cast<float> expected) (Seq.cast<float> y64)
                && Seq.forall2 (fun (e: float) (a: float) -> abs (a - e) <= 6e-7 * max (abs e) 1.0) (Seq.cast<float> expected) (Seq.cast<float> y32))

        testCase "the fused forward passes' functions (log sigmoid, softplus, sigmoid, SiLU, tanh, ReLU; in an elementwise chain and in a gate) at 0, -0, subnormal, 1e30, infinite and NaN arguments give what libtorch's composite form gives: NaN where it gives NaN (SiLU at -inf), else within 1e-6 of it relative to the larger of it and 1 (float32 and float64)" <| fun () ->
            let arguments = [| nan; infinity; -infinity; 0.0; -0.0; 5e-324; 1.0; -1.0; 50.0; -50.0; 100.0; -100.0; 800.0; -800.0; 1e30; -1e30 |]
            let x : Sequence = Array3D.init 1 1 arguments.Length (fun _ _ i -> arguments.[i])
            let kinds = [ ActivationKind.LogSigmoid; ActivationKind.Softplus; ActivationKind.Sigmoid; ActivationKind.SiLU; ActivationKind.Tanh; ActivationKind.ReLU ]
            for kind in kinds do
                let chain = Model.Input("x", arguments.Length).Activation(kind, "f").Scale(2.0, name = "s").Build()
                let gate = Model.Input("x", arguments.Length).Scale(1.0, name = "v").Gate((fun g -> g.From("x")), kind, name = "gated").Build()
                for g, form in [ chain, "chain"; gate, "gate" ] do
                    for dtype in [ torch.float32; torch.float64 ] do
                        let run execution = noGrad (fun () -> ofTensor (g.Compile(CompileOptions(DType = dtype, Execution = execution)).forward(toTensor dtype x)))
                        let (fused, composite) = (run ExecutionMode.Auto, run ExecutionMode.TorchOps)
                        for i in 0 .. arguments.Length - 1 do
                            let (a, e) = (fused.[0, 0, i], composite.[0, 0, i])
                            let agree = if Double.IsNaN e then Double.IsNaN a else a = e || abs (a - e) <= 1e-6 * max (abs e) 1.0
                            Expect.isTrue agree (sprintf "%A, %s, %A at x = %g: %g, libtorch %g" kind form dtype arguments.[i] a e)

        testProperty "an attention reading its graph input directly: a view whose rows are evenly spaced (a slice of wider rows, read in place) and one whose features are not adjacent (every other column, copied) give what the contiguous input gives, forward and gradients (float64, exact)" <| fun (seed: int) ->
            let random = Random(seed)
            let (heads, time) = (random.Next(1, 4), random.Next(1, 70))
            let width = 2 * heads
            let g =
                let built =
                    Model.Input("x", width)
                        .GatedLinearAttention(heads, 2, 2, (fun q -> q.From("x")), (fun k -> k.From("x")), (fun v -> v.From("x")),
                                              (fun l -> l.Projection(heads).LogSigmoid()), (fun i -> i.Projection(heads)), random.Next(2) = 0).Build()
                InitializeWeights.Run(built, seed, WeightInit.Perturbed)
            let model = g.Compile(CompileOptions.Float64)
            let dense = toTensor f64 (randomSequence random 2 time width 1.0)
            // [2, time, width] as columns 3.. of wider rows, and as every other column of [2, time, 2 width]; not a permutation,
            // which at one step is a transposed matrix that libtorch's product reads in another summation order
            let wide = torch.cat([| torch.randn([| 2L; int64 time; 3L |], dtype = f64); dense; torch.randn([| 2L; int64 time; 1L |], dtype = f64) |], 2L)
            let sliced = wide.narrow(2L, 3L, int64 width)
            let spread = torch.stack([| dense; torch.randn_like(dense) |], 3L).select(3L, 0L)
            let outputAndGradient (x: torch.Tensor) =
                let input = x.detach().requires_grad_(true)
                let y = model.forward(input)
                backwardOf (fun () -> y.square().sum())
                ofTensorFlat y, ofTensorFlat (input.grad.contiguous())
            let forward (x: torch.Tensor) = noGrad (fun () -> ofTensorFlat (model.forward(x)))
            let (expected, expectedGradient) = outputAndGradient dense
            (sliced.stride(2) = 1L && spread.stride(2) = 2L)
            && [ sliced; spread ] |> List.forall (fun x -> forward x = forward dense && outputAndGradient x = (expected, expectedGradient))

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 30 }
            "gated linear attention, decay per key channel on both sides of the factoring bound: forms and gradients agree (float64, 1e-10)" <|
            Prop.forAll (Arb.fromGen (Gen.zip3 (Gen.elements [ 0.1; 30.0 ]) (Gen.choose (20, 150)) (Gen.choose (0, 10000)))) (fun (strength, time, seed) ->
                // strength 0.1: chunks of 64 steps decay by far less than e^-354, the factored product; strength 30: by more, the
                // channel-by-channel weights
                let g =
                    let built =
                        Model.Input("x", 4)
                            .GatedLinearAttention(2, 2, 2, (fun q -> q.Projection(4)), (fun k -> k.Projection(4)), (fun v -> v.Projection(4)),
                                                  (fun l -> l.Projection(4).Softplus().Scale(-strength)), (fun i -> i.Projection(2))).Build()
                    InitializeWeights.Run(built, seed, WeightInit.Perturbed)
                let inputs = [| randomSequence (Random(seed)) 2 time 4 1.0 |]
                let expected = (ReferenceEvaluator.Evaluate(g, inputs)).[0]
                let tensors = inputs |> Array.map (toTensor f64)
                let forms =
                    noGrad (fun () ->
                        [ for mode in modes -> sprintf "%A" mode, ofTensor (g.Compile(CompileOptions(DType = f64, Execution = mode)).Forward(tensors).[0]) ])
                let probe = randomSequence (Random(seed + 1)) 2 time 4 1.0
                let baseline = gradients g ExecutionMode.TorchOps inputs probe
                forms |> List.forall (fun (form, actual) -> within tolerance64 (scaledError expected actual) form)
                && List.forall2 (fun (name, e) (_, a) -> within tolerance64 (relative e a) (sprintf "Auto, gradient of %s" name))
                       baseline (gradients g ExecutionMode.Auto inputs probe))

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 20 }
            "gated linear attention with input-gate logits up to about 200 (beyond float32's e^88): every form stays finite and equals the reference (float32 scaled error <= 1e-3, float64 <= 1e-10)" <|
            Prop.forAll (Arb.fromGen (Gen.zip3 (Gen.elements [ true; false ]) (Gen.choose (1, 150)) (Gen.choose (0, 10000)))) (fun (normalised, time, seed) ->
                let g =
                    let built =
                        Model.Input("x", 4)
                            .GatedLinearAttention(2, 2, 2, (fun q -> q.Projection(4).Softplus()), (fun k -> k.Projection(4).Softplus()),
                                                  (fun v -> v.Projection(4)), (fun l -> l.Projection(2).LogSigmoid()),
                                                  (fun i -> i.Projection(2).Scale(60.0)), normalised).Build()
                    InitializeWeights.Run(built, seed, WeightInit.Perturbed)
                let inputs = [| randomSequence (Random(seed)) 2 time 4 1.0 |]
                let expected = (ReferenceEvaluator.Evaluate(g, inputs)).[0]
                let forms dtype =
                    let tensors = inputs |> Array.map (toTensor dtype)
                    noGrad (fun () ->
                        [ for mode in modes do
                              yield sprintf "%A %A" dtype mode, ofTensor (g.Compile(CompileOptions(DType = dtype, Execution = mode)).Forward(tensors).[0])
                          yield sprintf "%A step form" dtype, ofTensor (g.Compile(CompileOptions(DType = dtype)).ToStepForm().Unroll(tensors).[0]) ])
                let streamed32 = (LawsStreaming.stream32 (Duality.Streaming.Streamer.Create<float32>(g, 2)) g inputs).[0]
                let streamed64 = (LawsStreaming.stream64 (Duality.Streaming.Streamer.Create<float>(g, 2)) g inputs).[0]
                // positive queries and keys: n . q sums terms of one sign, so float32's rounding of g (ulp 1.5e-5 at 200) is not
                // amplified by cancellation; without the normaliser the output itself reaches e^200, beyond float32's range
                let float32Forms = if normalised then ("float32 streamer", streamed32) :: forms torch.ScalarType.Float32 else []
                (("float64 streamer", streamed64) :: forms f64) |> List.forall (fun (form, actual) -> within tolerance64 (scaledError expected actual) form)
                && float32Forms |> List.forall (fun (form, actual) -> within 1e-3 (scaledError expected actual) form))

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 60 }
            "gated linear attention's fused loop, without gradients and as one autograd operation with them, = reference, every decay, gate and normaliser, every remainder of four steps, both sides of the parallel threshold (float64 1e-10, float32 1e-4)" <|
            Prop.forAll
                (Arb.fromGen
                    (gen {
                        let! heads, dk, dv, time, batch = attentionSizes
                        let! decay = Gen.elements [ "none"; "per head"; "per key channel" ]
                        let! gated = Gen.elements [ true; false ]
                        let! normalised = Gen.elements [ true; false ]
                        let! fixedDecays = Gen.elements [ true; false ]
                        let! seed = Gen.choose (0, 10000)
                        return heads, dk, dv, time, batch, decay, gated, normalised, fixedDecays, seed }))
                (fun (heads, dk, dv, time, batch, decay, gated, normalised, fixedDecays, seed) ->
                    let d = 4
                    let logDecay: System.Func<SequenceBuilder, SequenceBuilder> =
                        match decay with
                        | "per head" -> System.Func<_, _>(fun l -> l.Projection(heads).LogSigmoid())
                        | "per key channel" -> System.Func<_, _>(fun l -> l.Projection(heads * dk).LogSigmoid())
                        | _ -> null
                    let logGate: System.Func<SequenceBuilder, SequenceBuilder> = if gated then System.Func<_, _>(fun i -> i.Projection(heads).Scale(3.0)) else null
                    let gammas = if fixedDecays then Array.init heads (fun h -> 1.0 - 2.0 ** float (-1 - h)) else null
                    let g =
                        let built =
                            Model.Input("x", d)
                                .GatedLinearAttention(heads, dk, dv, (fun q -> q.Projection(heads * dk)), (fun k -> k.Projection(heads * dk)),
                                                      (fun v -> v.Projection(heads * dv)), logDecay, logGate, normalised, gammas).Build()
                        InitializeWeights.Run(built, seed, WeightInit.Perturbed)
                    let inputs = [| randomSequence (Random(seed)) batch time d 1.0 |]
                    let expected = (ReferenceEvaluator.Evaluate(g, inputs)).[0]
                    let run dtype grad =
                        let model = g.Compile(CompileOptions(DType = dtype))
                        let tensors = inputs |> Array.map (toTensor dtype)
                        if grad then withGrad (fun () -> ofTensor (model.Forward(tensors).[0].detach()))
                        else noGrad (fun () -> ofTensor (model.Forward(tensors).[0]))
                    within tolerance64 (scaledError expected (run f64 false)) "fused loop, float64"
                    && within tolerance64 (scaledError expected (run f64 true)) "fused loop with gradients, float64"
                    && within tolerance32 (scaledError expected (run torch.ScalarType.Float32 false)) "fused loop, float32")

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 60 }
            "gated linear attention's reverse pass = autograd through its chunks of 64 steps = autograd through the masked form: gradients of q, k, v, the log-decays and the log-gates, every decay (both sides of the chunks' factoring bound), gate and normaliser, every remainder of four steps, both sides of the parallel threshold (float64 1e-10; float32 within 1e-4 of float64, scaled, 1e-3 with a gate and the normaliser, plus 100 u kappa with the normaliser, kappa the condition number of its n . q, u = 2^-24)" <|
            Prop.forAll
                (Arb.fromGen
                    (gen {
                        let! heads, dk, dv, time, batch = attentionSizes
                        let! decay = Gen.elements [ 0; 1; dk ]
                        // log-decays -strength softplus(z): 30 decays a chunk of 64 steps by more than e^-354, beyond the factored product
                        let! strength = Gen.elements [ 0.1; 1.0; 30.0 ]
                        let! gated = Gen.elements [ true; false ]
                        let! normalised = Gen.elements [ true; false ]
                        let! seed = Gen.choose (0, 10000)
                        return heads, dk, dv, time, batch, decay, strength, gated, normalised, seed }))
                reversePassAgrees

        testCase "gated linear attention with the normaliser keeps float32 accuracy where a step dominates its state and its key is nearly orthogonal to its query (k . q = 1e-3 |k| |q|): outputs as one autograd operation, compiled and as a streamer within 1e-6 of float64 and gradients within 5e-5, scaled; the output's own part and the normaliser's share one dot k . q, and the gradient forms the step's own part from the earlier steps' parts the loop kept, ((v e_n - E) . dy) / (nu |nu|), not from the stored y" <| fun () ->
            for seed in 0 .. 4 do
                for form, error, bound in dominatedStepErrors 1e-3 seed do
                    Expect.isLessThan error bound (sprintf "seed %d, %s: scaled error %.3e" seed form error)

        testCase "gated linear attention's reverse pass keeps a strong decay's gradient in float32 (within 1e-4 of float64, scaled): it is formed directly, not from terms that cancel" <| fun () ->
            for seed in 0 .. 9 do
                for decay in [ 1; 8 ] do
                    Expect.isTrue (reversePassAgrees (2, 8, 16, 70, 2, decay, 30.0, true, false, seed)) (sprintf "seed %d, decay width %d" seed decay)

        testCase "gated linear attention's reverse pass carries the log-decays' gradient across segments of 32 steps: weak decays per head and per key channel, 70 and 96 steps, with and without gate and normaliser (float64 1e-10)" <| fun () ->
            for seed in 0 .. 3 do
                for decay in [ 1; 8 ] do
                    for time in [ 70; 96 ] do
                        for gated, normalised in [ false, false; true, true ] do
                            Expect.isTrue (reversePassAgrees (2, 8, 16, time, 2, decay, 0.1, gated, normalised, seed))
                                (sprintf "seed %d, decay width %d, %d steps, gated %b, normalised %b" seed decay time gated normalised)

        testCase "gated linear attention by hand: input gate, decay per head, normaliser" <| fun () ->
            // x_t = (q, k, v, l, g): S_t = e^l S_{t-1} + e^g k v, o = q S, n likewise with v = 1
            // t0: (1, 1, 1, ln 1/2, 0): S = 1, o = 1; t1: (1, 2, 1, ln 1/2, ln 2): S = 1/2 + 4 = 4.5, o = 4.5;
            // t2: (2, 1, 3, ln 1/4, 0): S = 4.5/4 + 3 = 4.125, o = 8.25. n = 1, 4.5, 2.125; n q = 1, 4.5, 4.25
            let x = Array3D.init 1 3 5 (fun _ t f ->
                        [| [| 1.0; 1.0; 1.0; log 0.5; 0.0 |]; [| 1.0; 2.0; 1.0; log 0.5; log 2.0 |]; [| 2.0; 1.0; 3.0; log 0.25; 0.0 |] |].[t].[f])
            let attention normalised =
                Model.Input("x", 5)
                    .GatedLinearAttention(1, 1, 1, (fun q -> q.Slice(0, 1)), (fun k -> k.Slice(1, 1)), (fun v -> v.Slice(2, 1)),
                                          (fun l -> l.Slice(3, 1)), (fun g -> g.Slice(4, 1)), normalised).Build()
            worked (attention false) x [ 1.0; 4.5; 8.25 ]
            worked (attention true) x [ 1.0; 1.0; 8.25 / 4.25 ]

        testCase "gated linear attention by hand: decay per key channel, and fixed per-head decays" <| fun () ->
            // q = k = (1, 1), v = 1, 2; channel 1 decays by 1/2, channel 2 not: S1 = 1, 1/2 + 2; S2 = 1, 1 + 2; o = 2, 5.5
            let x = Array3D.init 1 2 6 (fun _ t f -> [| [| 1.0; 1.0; 1.0; 1.0; 1.0; log 0.5 |]; [| 1.0; 1.0; 1.0; 1.0; 2.0; log 0.5 |] |].[t].[f])
            let perChannel =
                Model.Input("x", 6)
                    .GatedLinearAttention(1, 2, 1, (fun q -> q.Slice(0, 2)), (fun k -> k.Slice(2, 2)), (fun v -> v.Slice(4, 1)),
                                          (fun l -> l.Slice(5, 1).Concat((fun (a: SequenceBuilder) -> a), (fun (b: SequenceBuilder) -> b.Scale(0.0))))).Build()
            worked perChannel x [ 2.0; 5.5 ]
            // gamma = 1/2 fixed and no branch: S = 1, 1/2 + 2 on each channel; o = 2, 5
            let fixedDecay =
                Model.Input("x", 6)
                    .GatedLinearAttention(1, 2, 1, (fun q -> q.Slice(0, 2)), (fun k -> k.Slice(2, 2)), (fun v -> v.Slice(4, 1)),
                                          headDecays = [| 0.5 |]).Build()
            worked fixedDecay x [ 2.0; 5.0 ]

        testCase "minGRU by hand: z = 1/2, h~ = 2x, x = 1, 2, 3 gives h = 1, 2.5, 4.25" <| fun () ->
            // h_t = (1 - z) h_{t-1} + z h~_t = h_{t-1}/2 + x_t: 0/2 + 1, 1/2 + 2, 2.5/2 + 3
            let g =
                let g = Model.Input("x", 1).Then(Blocks.MinGru(1)).Build()
                let g = projection g "mingru/update/value/candidate" (array2D [ [ 2.0 ] ]) [| 0.0 |]
                projection g "mingru/update/gate/z" (array2D [ [ 0.0 ] ]) [| 0.0 |]
            let x = scalars [ 1.0; 2.0; 3.0 ]
            let expected = [ 1.0; 2.5; 4.25 ]
            worked g x expected

        testCase "minGRU by hand: an input-dependent update, z_t = sigmoid(x_t - 1)" <| fun () ->
            // x = 1: z = 1/2, h = 1/2 * 2 = 1; x = 3: z = sigmoid 2, h = (1 - z) 1 + z 6
            let g =
                let g = Model.Input("x", 1).Then(Blocks.MinGru(1, "cell")).Build()
                let g = projection g "cell/update/value/candidate" (array2D [ [ 2.0 ] ]) [| 0.0 |]
                projection g "cell/update/gate/z" (array2D [ [ 1.0 ] ]) [| -1.0 |]
            let z = 1.0 / (1.0 + exp -2.0)
            let y = (ReferenceEvaluator.Evaluate(g, [| scalars [ 1.0; 3.0 ] |])).[0]
            Expect.floatClose Accuracy.veryHigh y.[0, 0, 0] 1.0 "step 0"
            Expect.floatClose Accuracy.veryHigh y.[0, 1, 0] ((1.0 - z) * 1.0 + z * 6.0) "step 1"

        testCase "minLSTM by hand: f = sigmoid 0 = 1/2, i = sigmoid(log 3) = 3/4, h~ = x" <| fun () ->
            // f = 1/2, i = 3/4: f' = (1/2) / (5/4) = 2/5, i' = 3/5; x = 1, 2: h = 3/5, 2/5 * 3/5 + 6/5 = 36/25
            let g =
                let g = Model.Input("x", 1).Then(Blocks.MinLstm(1)).Build()
                let g = projection g "minlstm/forget" (array2D [ [ 0.0 ] ]) [| 0.0 |]
                let g = projection g "minlstm/input" (array2D [ [ 0.0 ] ]) [| log 3.0 |]
                projection g "minlstm/update/value/candidate" (array2D [ [ 1.0 ] ]) [| 0.0 |]
            let expected = [ 0.6; 36.0 / 25.0 ]
            let x = scalars [ 1.0; 2.0 ]
            worked g x expected

        testCase "minGRU, minLSTM and RG-LRU run their gates, decay and recurrence as one fused pass (the decay's negation folded in, RG-LRU's input gate and normaliser in it), with and without gradients; minLSTM's logit and RG-LRU's log-decay as one elementwise pass without gradients" <| fun () ->
            for block, nodes, chain in
                [ Blocks.MinGru(16), [ "mingru/update/value/candidate"; "mingru/update"; "mingru/h/decay/negated"; "mingru/h" ], []
                  Blocks.MinLstm(16), [ "minlstm/update/value/candidate"; "minlstm/update/gate/negated"; "minlstm/update"; "minlstm/h" ],
                  [ "minlstm/log_forget"; "minlstm/log_input"; "minlstm/negated"; "minlstm/logit" ]
                  Blocks.RgLru(), [ "rglru/gated"; "rglru/normalised"; "rglru/h" ], [ "rglru/r"; "rglru/log_a" ] ] do
                let model = InitializeWeights.Run(Model.Input("x", 16).Then(block).Build(), 3).Compile()
                let group = model.FusedGroups |> Seq.filter (fun group -> group.Kind <> "elementwise chain") |> Seq.exactlyOne
                Expect.equal group.Kind "gate + recurrence, input-dependent decay" "the group"
                Expect.equal (List.ofSeq group.Nodes) nodes "its nodes"
                let chains = model.FusedGroups |> Seq.filter (fun group -> group.Kind = "elementwise chain") |> List.ofSeq
                Expect.equal (chains |> List.collect (fun c -> List.ofSeq c.Nodes)) chain "the elementwise chain's nodes"
                let x = torch.randn(2L, 5L, 16L)
                noGrad (fun () -> model.forward(x) |> ignore)
                backwardOf (fun () -> model.forward(x.requires_grad_(true)).sum())
                Expect.equal (group.Fused, group.NodeByNode) (2L, 0L) "both passes fused"
                for c in chains do Expect.equal (c.Fused, c.NodeByNode) (1L, 1L) "the chain fused without gradients, node by node with them"

        testCase "gated MLP: an expansion below 1 is refused, naming the option" <| fun () ->
            let error = Expect.throwsC (fun () -> Model.Input("x", 3).Then(Blocks.GatedMlp(0)) |> ignore) id
            Expect.stringContains error.Message "expansion" "names the option"
            Expect.isTrue (error :? GraphException) "the library's exception"

        testCase "RG-LRU by hand: r = i = 1/2, c log a = -2 ln 2, so a_t = 1/2 and the gain is sqrt 3 / 2" <| fun () ->
            // u_t = x_t i_t sqrt(1 - a_t^2) = sqrt 3 / 4 for x = 1; h = sqrt 3 / 4, then sqrt 3 / 8 + sqrt 3 / 4
            let g =
                let g = Model.Input("x", 1).Then(Blocks.RgLru()).Build()
                let g = projection g "rglru/recurrence_gate" (array2D [ [ 0.0 ] ]) [| 0.0 |]
                let g = projection g "rglru/gated/gate/input_gate" (array2D [ [ 0.0 ] ]) [| 0.0 |]
                g.WithWeight("rglru/log_a", "Factors", DoubleTensor.Vector [| -2.0 * log 2.0 |])
            let expected = [ sqrt 3.0 / 4.0; 3.0 * sqrt 3.0 / 8.0 ]
            let x = scalars [ 1.0; 1.0 ]
            worked g x expected

        testCase "RG-LRU: heads that do not divide the width are refused, naming the option" <| fun () ->
            let error = Expect.throwsC (fun () -> Model.Input("x", 6).Then(Blocks.RgLru(4)) |> ignore) id
            Expect.isTrue (error :? GraphException) "the library's exception"
            Expect.stringContains error.Message "heads" "names the option"

        testCase "decay normaliser: sqrt(1 - e^(2x)) to full precision near x = 0 and far below, as a node, in the reference and in the fused gate + recurrence pass" <| fun () ->
            // 1 - e^(2x) = -sum_n (2x)^n / n!, summed until the terms vanish, where 1 - e^(2x) would cancel
            let oneMinusExp2 x =
                if x < -0.5 then 1.0 - exp (2.0 * x)
                else
                    let mutable term, sum, n = 2.0 * x, 2.0 * x, 1.0
                    while abs term > 1e-18 * abs sum do
                        n <- n + 1.0
                        term <- term * 2.0 * x / n
                        sum <- sum + term
                    -sum
            let xs = [| -1e-12; -1e-6; -1e-3; -0.5; -3.0; -40.0 |]
            let expected = xs |> Array.map (oneMinusExp2 >> sqrt)
            let g = Model.Input("x", xs.Length).Activation(ActivationKind.DecayNormaliser).Build()
            let input = Array3D.init 1 1 xs.Length (fun _ _ i -> xs.[i])
            let reference = (ReferenceEvaluator.Evaluate(g, [| input |])).[0]
            let compiled = noGrad (fun () -> ofTensor (g.Compile(CompileOptions.Float64).Forward([| toTensor f64 input |]).[0]))
            // as the gate of a recurrence (RG-LRU's), computed in the fused pass: at one step h = 1 * sqrt(1 - e^(2x))
            let n = xs.Length
            let gated =
                Model.Input("x", 2 * n).Gate((fun v -> v.Slice(0, n)), (fun g -> g.Slice(n, n, name = "g")), ActivationKind.DecayNormaliser, name = "gate")
                    .LinearRecurrence(decay = (fun d -> d.From("gate/gate/g")), decayForm = DecayForm.Logarithm).Build().Compile(CompileOptions.Float64)
            let both = Array3D.init 1 1 (2 * n) (fun _ _ i -> if i < n then 1.0 else xs.[i - n])
            let fused = noGrad (fun () -> ofTensor (gated.Forward([| toTensor f64 both |]).[0]))
            Expect.equal (gated.FusedGroups |> Seq.sumBy (fun group -> group.Fused)) 1L "the gate and recurrence ran fused"
            for i in 0 .. xs.Length - 1 do
                for what, v in [ "reference", reference.[0, 0, i]; "compiled", compiled.[0, 0, i]; "fused gate + recurrence", fused.[0, 0, i] ] do
                    Expect.isLessThanOrEqual (abs (v - expected.[i])) (4e-15 * expected.[i]) (sprintf "%s at x = %g" what xs.[i])

        testCase "gated linear attention over no steps or no batch rows: empty outputs from the fused loop without and with gradients, and empty gradients from its reverse pass, with decays per head and per key channel, fixed gammas and a gate" <| fun () ->
            for decayWidth in [ 2; 4 ] do
                let g =
                    Model.Input("x", 4)
                        .GatedLinearAttention(2, 2, 3, (fun q -> q.Projection(4)), (fun k -> k.Projection(4)), (fun v -> v.Projection(6)),
                                              (fun l -> l.Projection(decayWidth).LogSigmoid()), (fun i -> i.Projection(2)), true, [| 0.9; 0.8 |]).Build()
                let model = InitializeWeights.Run(g, 1).Compile(CompileOptions.Float64)
                for shape in [ [| 2L; 0L; 4L |]; [| 0L; 3L; 4L |] ] do
                    let x = torch.zeros(shape, dtype = f64)
                    let label form = sprintf "%s, decay width %d, input %A" form decayWidth shape
                    for form, y in [ "fused loop", noGrad (fun () -> model.Forward([| x |]).[0]); "with gradients", withGrad (fun () -> model.Forward([| x |]).[0]) ] do
                        Expect.sequenceEqual y.shape [| shape.[0]; shape.[1]; 6L |] (label form)
                    let leaf = x.clone().requires_grad_(true)
                    withGrad (fun () -> backwardOf (fun () -> model.Forward([| leaf |]).[0].sum()))
                    Expect.sequenceEqual leaf.grad.shape shape (label "reverse pass")

        testCase "decay normaliser with gradients: the exact value, the slope -e^(2x) / sqrt(1 - e^(2x)) bounded at 1000 in magnitude, finite at x = 0 and x = -inf (float64)" <| fun () ->
            let xs = [| Double.NegativeInfinity; -40.0; -3.0; -0.5; -1e-3; -1e-6; -1e-9; 0.0 |]
            let g = Model.Input("x", xs.Length).Activation(ActivationKind.DecayNormaliser).Build()
            let input = Array3D.init 1 1 xs.Length (fun _ _ i -> xs.[i])
            let reference = (ReferenceEvaluator.Evaluate(g, [| input |])).[0]
            let x = (toTensor f64 input).requires_grad_(true)
            let y = g.Compile(CompileOptions.Float64).Forward([| x |]).[0]
            backwardOf (fun () -> y.sum())
            let values, slopes = ofTensorFlat y, ofTensorFlat x.grad
            for i in 0 .. xs.Length - 1 do
                let e = exp (2.0 * xs.[i])
                let exact = if xs.[i] = 0.0 then Double.NegativeInfinity else -e / sqrt (-Math.Exp(2.0 * xs.[i]) + 1.0 |> max 0.0)
                let expected = max exact (-e * 1000.0)
                Expect.equal values.[i] reference.[0, 0, i] (sprintf "value at x = %g" xs.[i])
                Expect.isTrue (Double.IsFinite slopes.[i]) (sprintf "finite slope at x = %g" xs.[i])
                Expect.isLessThanOrEqual (abs (slopes.[i] - expected)) (1e-9 * (1.0 + abs expected)) (sprintf "slope at x = %g" xs.[i])

        testCase "RG-LRU with a recurrence gate of exactly 0 (a decay of 1): finite gradients for every parameter (float64)" <| fun () ->
            let g0 = InitializeWeights.Run(Model.Input("x", 4).Then(Blocks.RgLru(1)).Build(), 3, WeightInit.Perturbed)
            // the recurrence gate's bias far below sigmoid's range: r = 0 exactly, so log a = c r log sigmoid(Lambda) = 0
            let gate = g0.Nodes |> Seq.find (fun n -> n.Name.EndsWith "recurrence_gate")
            let g = g0.WithWeight(gate.Name, "Bias", DoubleTensor.Vector(Array.create 4 -1000.0))
            let model = g.Compile(CompileOptions.Float64)
            let x = toTensor f64 (randomSequence (Random(5)) 2 6 4 1.0)
            backwardOf (fun () -> model.Forward([| x |]).[0].sum())
            for struct (name, p) in model.named_parameters() do
                Expect.isTrue (ofTensorFlat p.grad |> Array.forall Double.IsFinite) (sprintf "finite gradient of %s" name)

        testCase "norms at any magnitude: LayerNorm, RmsNorm and GroupNorm (centred and not) of x 2^k (float64 k = -600, 0, 600; float32 k = -60, 100) = by hand on x with epsilon 4^-k, in the reference, every mode and the streamer (1e-12; float32 1e-5), input gradients Auto = TorchOps (float64, 1e-10)" <| fun () ->
            let d, eps = 6, 1e-5
            let norms : (string * SequenceBuilder * int * bool) list =
                [ "LayerNorm", Model.Input("x", d).LayerNorm(epsilon = eps, affine = false), 1, true
                  "RmsNorm", Model.Input("x", d).RmsNorm(epsilon = eps, affine = false), 1, false
                  "GroupNorm", Model.Input("x", d).GroupNorm(2, epsilon = eps, affine = false), 2, true
                  "GroupNorm (RMS)", Model.Input("x", d).GroupNorm(3, epsilon = eps, affine = false, centre = false), 3, false ]
            let x0 = randomSequence (Random(3)) 2 5 d 1.0
            let byHand groups centre k =
                let width = d / groups
                Array3D.init 2 5 d (fun b t c ->
                    let from = c / width * width
                    let xs = [| for i in from .. from + width - 1 -> x0.[b, t, i] |]
                    let mean = if centre then Array.average xs else 0.0
                    let variance = xs |> Array.averageBy (fun v -> (v - mean) * (v - mean))
                    (x0.[b, t, c] - mean) / sqrt (variance + Math.ScaleB(eps, -2 * k)))
            for name, builder, groups, centre in norms do
                let g = builder.Build()
                for k, dtype, tolerance in [ -600, f64, 1e-12; 0, f64, 1e-12; 600, f64, 1e-12; -60, torch.ScalarType.Float32, 1e-5; 100, torch.ScalarType.Float32, 1e-5 ] do
                    let x = Array3D.map (fun v -> Math.ScaleB(v, k)) x0
                    let expected = byHand groups centre k
                    let check form (y: Sequence) =
                        Expect.isLessThanOrEqual (relativeError expected y) tolerance (sprintf "%s, %s at 2^%d (%A)" name form k dtype)
                    if dtype = f64 then check "reference" (ReferenceEvaluator.Evaluate(g, [| x |])).[0]
                    for mode in modes do
                        check (sprintf "%A" mode) (noGrad (fun () -> ofTensor (g.Compile(CompileOptions(DType = dtype, Execution = mode)).Forward([| toTensor dtype x |]).[0])))
                    if dtype = f64 then check "streamer" (LawsStreaming.stream64 (Duality.Streaming.Streamer.Create<float>(g, 2)) g [| x |]).[0]
                    else check "streamer" (LawsStreaming.stream32 (Duality.Streaming.Streamer.Create<float32>(g, 2)) g [| x |]).[0]
                    if dtype = f64 then
                        let probe = randomSequence (Random(4)) 2 5 d 1.0
                        let inputGradient mode = gradients g mode [| x |] probe |> List.last |> snd
                        let (fused, composite) = inputGradient ExecutionMode.Auto, inputGradient ExecutionMode.TorchOps
                        Expect.isTrue (Array.forall Double.IsFinite fused) (sprintf "%s: a finite input gradient at 2^%d" name k)
                        Expect.isLessThanOrEqual (relativeFlat composite fused) 1e-10 (sprintf "%s: input gradient at 2^%d" name k)

        testCase "group norm by hand: x = 1, 3, 2, 6 in two groups is -1, 1, -1, 1 centred; 1, 3 over sqrt 5 as RMS" <| fun () ->
            let x = Array3D.init 1 1 4 (fun _ _ i -> [| 1.0; 3.0; 2.0; 6.0 |].[i])
            let normed centre =
                let g = Model.Input("x", 4).GroupNorm(2, epsilon = 1e-300, affine = false, centre = centre).Build()
                (ReferenceEvaluator.Evaluate(g, [| x |])).[0], noGrad (fun () -> ofTensor (g.Compile(CompileOptions.Float64).Forward([| toTensor f64 x |]).[0]))
            for what, y in [ "reference", fst (normed true); "compiled", snd (normed true) ] do
                for i, e in List.indexed [ -1.0; 1.0; -1.0; 1.0 ] do Expect.floatClose Accuracy.veryHigh y.[0, 0, i] e (sprintf "%s, centred, %d" what i)
            for what, y in [ "reference", fst (normed false); "compiled", snd (normed false) ] do
                Expect.floatClose Accuracy.veryHigh y.[0, 0, 0] (1.0 / sqrt 5.0) (sprintf "%s, RMS" what)
                Expect.floatClose Accuracy.veryHigh y.[0, 0, 3] (6.0 / sqrt 20.0) (sprintf "%s, RMS" what)

        testProperty "group norm = PyTorch's group_norm at each step (float64, 1e-12)" <| fun (seed: int) ->
            let random = Random(seed)
            let groups = [| 1; 2; 3; 6 |].[random.Next 4]
            let g = InitializeWeights.Run(Model.Input("x", 6).GroupNorm(groups).Build(), seed, WeightInit.Perturbed)
            let norm = g.Nodes |> Seq.pick (function :? GroupNorm as n -> Some n | _ -> None)
            let x = randomSequence random 2 5 6 3.0
            let ours = (ReferenceEvaluator.Evaluate(g, [| x |])).[0]
            let flat = (toTensor f64 x).reshape(10L, 6L)
            let theirs =
                torch.nn.functional.group_norm(flat, int64 groups, toTensor1 norm.Weights.Gain, toTensor1 norm.Weights.Bias, 1e-5).reshape(2L, 5L, 6L)
            scaledError ours (ofTensor theirs) <= 1e-12

        testCase "LRU by hand: lambda = i/2, gamma = sqrt 3 / 2, B x = (1 + i) x, C = [1, 2], D = 1/4" <| fun () ->
            // h_1 = gamma (1 + i), h_2 = (i/2) h_1 + gamma (1 + i) = gamma (1/2 + 3i/2); y = re + 2 im + x / 4
            let gamma = sqrt 3.0 / 2.0
            let g =
                Model.Input("x", 1).Then(Blocks.Lru(1)).Build()
                    .WithWeight("lru/B", "Weight", DoubleTensor.Matrix(array2D [ [ 1.0 ]; [ 1.0 ] ]))
                    .WithWeight("lru/C", "Weight", DoubleTensor.Matrix(array2D [ [ 1.0; 2.0 ] ]))
                    .WithWeight("lru/h", "Lambda", DoubleTensor.FromShape([| 1; 2 |], [| 0.0; 0.5 |]))
                    .WithWeight("lru/skip/D", "Factors", DoubleTensor.Vector [| 0.25 |])
            let expected = [ 3.0 * gamma + 0.25; 3.5 * gamma + 0.25 ]
            let x = scalars [ 1.0; 1.0 ]
            worked g x expected

        testCase "DeltaNet is refused in both languages, saying its transition is not diagonal and what to use instead" <| fun () ->
            for build in [ (fun () -> Model.Input("x", 8).Then(Blocks.DeltaNet(2, 4, 4)) |> ignore)
                           (fun () -> Model.Input("x", 8) |> Duality.FSharp.Blocks.deltaNetNamed "memory" 2 4 4 |> ignore) ] do
                let error = Expect.throwsC build id
                Expect.isTrue (error :? GraphException) "the library's exception"
                for words in [ "not diagonal"; "I - beta k k^T"; "minGRU" ] do Expect.stringContains error.Message words "says why and what instead"

        testProperty "multi-scale decays lower exactly into the gated RNN, both constructions (float64, 1e-10)" <| fun (seed: int) ->
            let g, x, expected = multiScale (1 + abs seed % 4) 3 2 80 seed
            [ Construction.Full; Construction.Compressed ]
            |> List.forall (fun c ->
                let lowered = LowerAttention.ToGatedRnn(g, c)
                within tolerance64 (scaledError expected (ReferenceEvaluator.Evaluate(lowered, [| x |])).[0]) (sprintf "%A, reference" c)
                && within tolerance64 (scaledError expected (noGrad (fun () -> ofTensor (lowered.Compile(CompileOptions.Float64).Forward([| toTensor f64 x |]).[0])))) (sprintf "%A, compiled" c))

        testProperty "multi-scale decays raise back from both lowerings: one decay per head, the same function (float64, 1e-10)" <| fun (seed: int) ->
            let heads = 2 + abs seed % 3
            let g, x, expected = multiScale heads 2 3 30 seed
            [ Construction.Full; Construction.Compressed ]
            |> List.forall (fun c ->
                let raised = (RaiseAttention.Run(LowerAttention.ToGatedRnn(g, c))).Graph
                let attention = raised.Nodes |> Seq.pick (function :? Attention as a -> Some a | _ -> None)
                let decays = attention.HeadDecays.Data |> Seq.distinct |> Seq.sort |> List.ofSeq
                decays = (retNetDecays heads |> Array.sort |> List.ofArray)
                && within tolerance64 (scaledError expected (ReferenceEvaluator.Evaluate(raised, [| x |])).[0]) (sprintf "%A, raised" c))

        testCase "every C# block has its F# function, with and without a scope name" <| fun () ->
            let blocks = typeof<Duality.Builders.Blocks>.GetMethods(Reflection.BindingFlags.Public ||| Reflection.BindingFlags.Static ||| Reflection.BindingFlags.DeclaredOnly)
            Expect.isNonEmpty blocks "blocks"
            for m in blocks do
                let fsharp = string (Char.ToLowerInvariant m.Name.[0]) + m.Name.Substring 1
                for name in [ fsharp; fsharp + "Named" ] do
                    Expect.isTrue (LawsFSharp.coverExists (LawsFSharp.Fn("Blocks", name))) (sprintf "Blocks.%s for the C# Blocks.%s" name m.Name)

        testCase "a block used twice takes numbered scopes; a given scope name is used as given" <| fun () ->
            let g = Model.Input("x", 3).Then(Blocks.MinGru(4)).Then(Blocks.MinGru(2)).Then(Blocks.MinGru(2, "last")).Build()
            for name in [ "mingru/h"; "mingru_2/h"; "last/h" ] do Expect.isTrue (g.Contains name) name
            Expect.equal g.Widths.[g.Outputs.[0].Index] 2 "output width"

        testCase "softplus: log(1 + e^x) exactly at both ends, compiled and in the reference" <| fun () ->
            let xs = [| -800.0; -40.0; -20.0; -1e-3; 0.0; 1e-12; 1.0; 20.0; 40.0; 800.0 |]
            // max(x, 0) + log(1 + u), u = e^-|x|: the series where 1 + u would round, the logarithm elsewhere
            let expected =
                xs |> Array.map (fun x ->
                    let u = exp (-(abs x))
                    max x 0.0 + (if u < 1e-3 then u - u * u / 2.0 + u ** 3.0 / 3.0 - u ** 4.0 / 4.0 + u ** 5.0 / 5.0 else log (1.0 + u)))
            let g = Model.Input("x", xs.Length).Softplus().Build()
            let input = Array3D.init 1 1 xs.Length (fun _ _ i -> xs.[i])
            let reference = (ReferenceEvaluator.Evaluate(g, [| input |])).[0]
            let compiled = noGrad (fun () -> ofTensor (g.Compile(CompileOptions.Float64).Forward([| toTensor f64 input |]).[0]))
            for i in 0 .. xs.Length - 1 do
                let close what (v: float) =
                    Expect.isLessThanOrEqual (abs (v - expected.[i])) (4e-15 * abs expected.[i]) (sprintf "%s at x = %g" what xs.[i])
                close "reference" reference.[0, 0, i]
                close "compiled" compiled.[0, 0, i]

        testCase "elu + 1 (the linear attention's feature map): e^x below 0 and x + 1 above, to 4e-15 relative, compiled in every mode and in the reference, and its gradient e^x below 0 and 1 above (float64)" <| fun () ->
            let xs = [| -700.0; -40.0; -20.0; -1.0; -1e-3; -1e-300; 0.0; 1e-12; 1.0; 40.0 |]
            let value x = if x > 0.0 then x + 1.0 else exp x
            let slope x = if x > 0.0 then 1.0 else exp x
            let g = Model.Input("x", xs.Length).Activation(ActivationKind.EluPlusOne).Build()
            let input = Array3D.init 1 1 xs.Length (fun _ _ i -> xs.[i])
            let close what (expected: float) (actual: float) x =
                Expect.isLessThanOrEqual (abs (actual - expected)) (4e-15 * abs expected) (sprintf "%s at x = %g: %.17g, expected %.17g" what x actual expected)
            let reference = (ReferenceEvaluator.Evaluate(g, [| input |])).[0]
            for i, x in Array.indexed xs do close "reference" (value x) reference.[0, 0, i] x
            for mode in [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ] do
                let model = g.Compile(CompileOptions(DType = f64, Execution = mode))
                let compiled = noGrad (fun () -> ofTensor (model.Forward([| toTensor f64 input |]).[0]))
                let gradient =
                    withGrad (fun () ->
                        let leaf = (toTensor f64 input).requires_grad_(true)
                        backwardOf (fun () -> model.Forward([| leaf |]).[0].sum())
                        ofTensor leaf.grad)
                for i, x in Array.indexed xs do
                    close (sprintf "%A" mode) (value x) compiled.[0, 0, i] x
                    close (sprintf "%A, gradient" mode) (slope x) gradient.[0, 0, i] x

        testCase "log sigmoid and log softplus: the reference is exact to 1e-14 at z = -1000, -50, -20, -1, 0, 1, 50, 1000 (against Decimal)" <| fun () ->
            let zs = [| -1000.0; -800.0; -50.0; -20.0; -1.0; 0.0; 1.0; 50.0; 800.0; 1000.0 |]
            let input = Array3D.init 1 1 zs.Length (fun _ _ i -> zs.[i])
            for kind, pick in [ ActivationKind.LogSigmoid, fst; ActivationKind.LogSoftplus, snd ] do
                let y = (ReferenceEvaluator.Evaluate(Model.Input("x", zs.Length).Activation(kind).Build(), [| input |])).[0]
                for i, z in Array.indexed zs do
                    let expected = pick (logSigmoidAndLogSoftplus z)
                    Expect.isLessThanOrEqual (abs (y.[0, 0, i] - expected)) (1e-14 * abs expected)
                        (sprintf "%A at z = %g: %.17g, expected %.17g" kind z y.[0, 0, i] expected)

        testCase "log sigmoid, log softplus and softplus compiled: values = reference (float64, 1e-12), autograd = the derivative (1e-10), finite in float32, over [-1000, 1000]" <| fun () ->
            let input = Array3D.init 1 1 logActivationPoints.Length (fun _ _ i -> logActivationPoints.[i])
            // softplus' = sigmoid, log sigmoid's slope at -x
            for kind, slope in [ ActivationKind.LogSigmoid, logSigmoidSlope; ActivationKind.LogSoftplus, logSoftplusSlope
                                 ActivationKind.Softplus, (fun z -> logSigmoidSlope -z) ] do
                let g = Model.Input("x", logActivationPoints.Length).Activation(kind).Build()
                let reference = (ReferenceEvaluator.Evaluate(g, [| input |])).[0]
                for dtype, valueTolerance, slopeTolerance, smallestNormal in
                        [ f64, 1e-12, 1e-10, 2.2250738585072014e-308; torch.ScalarType.Float32, infinity, infinity, 1.1754943508222875e-38 ] do
                    let x = (toTensor dtype input).requires_grad_(true)
                    let y = g.Compile(CompileOptions(DType = dtype)).Forward([| x |]).[0]
                    backwardOf (fun () -> y.sum())
                    let values, slopes = ofTensorFlat y, ofTensorFlat x.grad
                    let valueError = Array.init values.Length (fun i -> relativeTo smallestNormal reference.[0, 0, i] values.[i]) |> Array.max
                    let slopeError =
                        Array.init slopes.Length (fun i -> relativeTo smallestNormal (slope logActivationPoints.[i]) slopes.[i]) |> Array.max
                    let allFinite = Array.forall Double.IsFinite values && Array.forall Double.IsFinite slopes
                    Expect.isTrue allFinite (sprintf "%A, %A: finite values and gradients" kind dtype)
                    Expect.isLessThanOrEqual valueError valueTolerance (sprintf "%A, %A: values against the reference" kind dtype)
                    Expect.isLessThanOrEqual slopeError slopeTolerance (sprintf "%A, %A: autograd against the derivative" kind dtype)

        testCase "log sigmoid and log softplus streamed = reference (float64 1e-12, float32 1e-5), over [-1000, 1000]" <| fun () ->
            let input = Array3D.init 1 1 logActivationPoints.Length (fun _ _ i -> logActivationPoints.[i])
            let rounded = input |> Array3D.map (float32 >> float)
            for kind in [ ActivationKind.LogSigmoid; ActivationKind.LogSoftplus ] do
                let g = Model.Input("x", logActivationPoints.Length).Activation(kind).Build()
                let worst smallestNormal (expected: Sequence) (actual: Sequence) =
                    Array.init logActivationPoints.Length (fun i -> relativeTo smallestNormal expected.[0, 0, i] actual.[0, 0, i]) |> Array.max
                let in64 = worst 2.2250738585072014e-308 (ReferenceEvaluator.Evaluate(g, [| input |])).[0] (LawsStreaming.stream64 (Streaming.Streamer.Create<float>(g)) g [| input |]).[0]
                let in32 =
                    worst (1.1754943508222875e-38) (ReferenceEvaluator.Evaluate(g, [| rounded |])).[0]
                        (LawsStreaming.stream32 (Streaming.Streamer.Create<float32>(g)) g [| rounded |]).[0]
                Expect.isLessThanOrEqual in64 1e-12 (sprintf "%A, float64" kind)
                Expect.isLessThanOrEqual in32 1e-5 (sprintf "%A, float32" kind)
    ]
