/// Random well-formed architectures that grow with FsCheck's size, as printable descriptions
/// that are built through the C# builders, and random attention layers.
module Duality.Testing.Generators

open System
open FsCheck
open FsCheck.FSharp
open Duality.Ir
open Duality.Builders
open Duality.Passes

/// How a generated recurrence gets its eigenvalues.
type RecurrenceKind =
    /// Real, trainable, seeded.
    | Trainable
    /// Real and fixed, one lambda in (-1, 1) per neuron.
    | Fixed of lambda: double list
    /// Complex, trainable and seeded, emitting the real part or [re; im]; starting from the given state [width, 2]
    /// (re, im pairs flattened), or from zero when None.
    | Complex of readout: ComplexReadout * initialState: double list option
    /// Input-dependent, lambda_t = sigmoid(projection x_t), one decay for all neurons when `shared`, else one per neuron.
    | Decay of shared: bool
    /// lambda_t = e^(-softplus(P x_t)), after a self-gate by the decay normaliser sqrt(1 - e^(-2 softplus(Q x_t)))
    | LogDecay of shared: bool
    /// Complex and trainable, fed [re; im] of a projection to twice the width, emitting [re; im], its input scaled by
    /// sqrt(1 - |lambda|^2) when `normalised` (the LRU's recurrence)
    | ComplexInput of normalised: bool
    /// Real and trainable, starting from the given state [width].
    | RealWithInitialState of double list

/// The decay of a generated attention: the F# surface's own type (Gated is the input-dependent decay).
type AttentionDecay = Duality.FSharp.Decay

/// gamma, theta, whether the decay is input-dependent, and per-head gammas, as the C# builder takes them.
let private decayArguments (decay: AttentionDecay) =
    match decay with
    | AttentionDecay.Gamma g -> Nullable g, Nullable(), false, null
    | AttentionDecay.Rotating(g, theta) -> Nullable g, Nullable theta, false, null
    | AttentionDecay.NoDecay -> Nullable(), Nullable(), false, null
    | AttentionDecay.Gated -> Nullable(), Nullable(), true, null
    | AttentionDecay.PerHead gammas -> Nullable(), Nullable(), false, Array.ofList gammas

/// A generated attention: heads, key and value widths, causality, kernel, feature map, decay and output projection.
type AttentionSpec =
    { Heads: int; Key: int; Value: int; Causal: bool; Kernel: AttentionKernel
      FeatureMap: ActivationKind; Decay: AttentionDecay; Out: int option }

/// Where a generated gated linear attention's decay comes from.
type GatedDecay =
    /// No decay.
    | Undecayed
    /// -softplus(Projection(Heads) x): one log-decay per head.
    | DecayPerHead
    /// -softplus(Projection(Heads*KeyWidth) x): one log-decay per key channel.
    | DecayPerKeyChannel
    /// Fixed per-head gammas, with a decay per head from the input besides.
    | FixedAndPerHead of gammas: double list

/// A generated gated linear attention: heads, key and value widths, decay, input gate (4 tanh(Projection x), so that a
/// float32 chain of them stays within range), normaliser.
type GatedAttentionOp =
    { GHeads: int; GKey: int; GValue: int; GDecay: GatedDecay; InputGate: bool; Normalised: bool }

/// One layer applied to the current sequence.
type Op =
    /// A projection to `outFeatures`, with or without a bias.
    | Project of outFeatures: int * bias: bool
    /// Projection(width) x * activation (Projection(width) x).
    | GateOf of width: int * activation: ActivationKind
    /// x * activation (Projection x), the width kept.
    | SelfGate of activation: ActivationKind
    /// A linear recurrence over the current width.
    | Recurrence of RecurrenceKind
    /// Self-attention over the current width.
    | AttentionOp of AttentionSpec
    /// An elementwise activation.
    | Act of ActivationKind
    /// x + Projection(RmsNorm x).
    | ResidualProjection
    /// [Projection(a) x; Projection(b) x].
    | ConcatOf of int * int
    /// Features start .. start + length - 1.
    | SliceOf of start: int * length: int
    /// A layer norm.
    | LayerNormOp
    /// An RMS norm.
    | RmsNormOp
    /// A constant factor.
    | ScaleOp of double
    /// A causal depthwise convolution of `kernelSize` taps.
    | ConvolutionOp of kernelSize: int
    /// A learned factor per channel, initially in [-2, 2].
    | ChannelScaleOp
    /// A group norm of `groups` groups, centred or RMS.
    | GroupNormOp of groups: int * centre: bool
    /// Gated linear attention over projections of the current sequence.
    | GatedAttentionOf of GatedAttentionOp
    /// A rotary position embedding of `heads` heads of even width, its angles theta_j given or 10000^(-2j/d).
    | RotaryOp of heads: int * angles: double list option
    /// The current sequence divided per head by max(|n|, 1), n a projection of it to `heads` features.
    | NormalisedReadoutOf of heads: int
    /// Marks the current node as an output (the graph then has several).
    | MarkOutput

/// An architecture: one or two inputs (a second is concatenated to the first), then layers.
type Architecture =
    { Input: int; Second: int option; Ops: Op list }

/// Every activation kind defined on all reals (the decay normaliser, NaN above 0, is drawn on log-decays only).
let activations =
    [ ActivationKind.Identity; ActivationKind.Sigmoid; ActivationKind.SiLU; ActivationKind.GELU
      ActivationKind.Tanh; ActivationKind.ReLU; ActivationKind.EluPlusOne; ActivationKind.Softplus
      ActivationKind.LogSigmoid; ActivationKind.LogSoftplus ]

let private width = Gen.choose (1, 6)

let private lambdas n = Gen.listOfLength n (Gen.map (fun i -> float i / 100.0) (Gen.choose (-99, 99)))

let private attention w =
    gen {
        let! heads = Gen.choose (1, 3)
        let! key = Gen.choose (1, 4)
        let! value = Gen.choose (1, 4)
        let! causal = Gen.frequency [ 3, Gen.constant true; 1, Gen.constant false ]
        let! kernel = Gen.elements [ AttentionKernel.Linear; AttentionKernel.Softmax ]
        let! featureMap =
            if kernel = AttentionKernel.Linear then Gen.elements [ ActivationKind.Identity; ActivationKind.EluPlusOne ]
            else Gen.constant ActivationKind.Identity
        let! decay =
            if kernel = AttentionKernel.Linear && causal then
                let gamma = Gen.map (fun i -> float i / 100.0) (Gen.choose (50, 100))
                Gen.oneof
                    [ Gen.constant AttentionDecay.NoDecay
                      Gen.map AttentionDecay.Gamma gamma
                      Gen.map2 (fun g p -> AttentionDecay.Rotating(g, float p / 10.0)) gamma (Gen.choose (-31, 31))
                      Gen.constant AttentionDecay.Gated
                      Gen.map AttentionDecay.PerHead (Gen.listOfLength heads gamma) ]
            else Gen.constant AttentionDecay.NoDecay
        let! out = Gen.oneof [ Gen.constant None; Gen.map Some width ]
        return { Heads = heads; Key = key; Value = value; Causal = causal; Kernel = kernel
                 FeatureMap = featureMap; Decay = decay; Out = out }
    }

let private recurrence w =
    Gen.oneof
        [ Gen.constant Trainable
          Gen.map Fixed (lambdas w)
          gen {
              let! readout = Gen.elements [ ComplexReadout.RealPart; ComplexReadout.RealAndImaginary ]
              let! init = Gen.oneof [ Gen.constant None; Gen.map Some (lambdas (2 * w)) ]
              return Complex(readout, init)
          }
          Gen.map Decay (Gen.elements [ true; false ])
          Gen.map LogDecay (Gen.elements [ true; false ])
          Gen.map ComplexInput (Gen.elements [ true; false ])
          Gen.map RealWithInitialState (lambdas w) ]

/// The width after an op, given the width before.
let widthAfter w op =
    match op with
    | Project(o, _) -> o
    | GateOf(m, _) -> m
    | Recurrence(Complex(ComplexReadout.RealAndImaginary, _)) -> 2 * w
    | Recurrence(ComplexInput _) -> 2 * w
    | AttentionOp a -> defaultArg a.Out (a.Heads * a.Value)
    | GatedAttentionOf g -> g.GHeads * g.GValue
    | ConcatOf(a, b) -> a + b
    | SliceOf(_, l) -> l
    | _ -> w

let private op w =
    Gen.frequency (
        [ 3, Gen.map2 (fun o b -> Project(o, b)) width (Gen.elements [ true; false ])
          2, Gen.map2 (fun m a -> GateOf(m, a)) width (Gen.elements activations)
          1, Gen.map SelfGate (Gen.elements activations)
          3, Gen.map Recurrence (recurrence w)
          2, Gen.map AttentionOp (attention w)
          1, Gen.map Act (Gen.elements activations)
          1, Gen.constant ResidualProjection
          1, Gen.map2 (fun a b -> ConcatOf(a, b)) width width
          1, gen {
                 let! start = Gen.choose (0, w - 1)
                 let! length = Gen.choose (1, w - start)
                 return SliceOf(start, length)
             }
          1, Gen.constant LayerNormOp
          1, Gen.constant RmsNormOp
          1, Gen.map (fun i -> ScaleOp(float i / 4.0)) (Gen.choose (-8, 8))
          1, Gen.map ConvolutionOp (Gen.choose (1, 5))
          1, Gen.constant ChannelScaleOp
          1, gen {
                 let! groups = Gen.elements [ for g in 1 .. w do if w % g = 0 then g ]
                 let! centre = Gen.elements [ true; false ]
                 return GroupNormOp(groups, centre)
             }
          1, gen {
                 let! heads = Gen.choose (1, 3)
                 let! key = Gen.choose (1, 3)
                 let! value = Gen.choose (1, 3)
                 let gamma = Gen.map (fun i -> float i / 100.0) (Gen.choose (50, 100))
                 let! decay =
                     Gen.oneof [ Gen.constant Undecayed; Gen.constant DecayPerHead; Gen.constant DecayPerKeyChannel
                                 Gen.map FixedAndPerHead (Gen.listOfLength heads gamma) ]
                 let! gate = Gen.elements [ true; false ]
                 let! normalised = Gen.elements [ true; false ]
                 return GatedAttentionOf { GHeads = heads; GKey = key; GValue = value; GDecay = decay; InputGate = gate; Normalised = normalised }
             }
          1, Gen.map NormalisedReadoutOf (Gen.elements [ for h in 1 .. w do if w % h = 0 then h ])
          1, Gen.constant MarkOutput ]
        @ (if w % 2 <> 0 then []
           else
               [ 1, gen {
                        let! heads = Gen.elements [ for h in 1 .. w / 2 do if w % h = 0 && (w / h) % 2 = 0 then h ]
                        let angles = Gen.listOfLength (w / heads / 2) (Gen.map (fun i -> float i / 10.0) (Gen.choose (-31, 31)))
                        let! given = Gen.oneof [ Gen.constant None; Gen.map Some angles ]
                        return RotaryOp(heads, given)
                    } ]))

/// Architectures of 1 + size/8 layers (at most 8).
let architecture : Gen<Architecture> =
    Gen.sized (fun size ->
        gen {
            let! input = width
            let! second = Gen.frequency [ 4, Gen.constant None; 1, Gen.map Some width ]
            let! count = Gen.choose (1, 1 + min 7 (size / 8))
            let rec ops n w acc =
                if n = 0 then Gen.constant (List.rev acc)
                else gen {
                    let! o = op w
                    return! ops (n - 1) (widthAfter w o) (o :: acc)
                }
            let! layers = ops count (input + defaultArg second 0) []
            return { Input = input; Second = second; Ops = layers }
        })

let private vector (values: double list) = DoubleTensor.Vector(Array.ofList values)

let private apply (b: SequenceBuilder) op : SequenceBuilder =
    let w = b.Width.Value
    match op with
    | Project(o, bias) -> b.Projection(o, bias = bias)
    | GateOf(m, a) -> b.Gate((fun v -> v.Projection(m)), (fun g -> g.Projection(m)), a)
    | SelfGate a -> b.Gate((fun g -> g.Projection(w)), a)
    | Recurrence Trainable -> b.LinearRecurrence()
    | Recurrence(Fixed l) -> b.LinearRecurrence(Array.ofList l)
    | Recurrence(Complex(readout, init)) ->
        b.LinearRecurrence(state = StateKind.Complex, readout = readout,
                           initialState = (init |> Option.map (fun v -> DoubleTensor.FromShape([| w; 2 |], Array.ofList v)) |> Option.toObj))
    | Recurrence(Decay shared) -> b.LinearRecurrence(decay = (fun d -> d.Projection(if shared then 1 else w)))
    | Recurrence(LogDecay shared) ->
        b.Gate((fun d -> d.Projection(w).Softplus().Scale(-1.0)), ActivationKind.DecayNormaliser)
         .LinearRecurrence(decay = (fun d -> d.Projection(if shared then 1 else w).Softplus().Scale(-1.0)), decayForm = DecayForm.Logarithm)
    | Recurrence(RealWithInitialState h0) -> b.LinearRecurrence(initialState = vector h0)
    | Recurrence(ComplexInput normalised) ->
        b.Projection(2 * w).LinearRecurrence(w, state = StateKind.Complex, readout = ComplexReadout.RealAndImaginary,
                                             complexInput = true, normalisedInput = normalised)
    | AttentionOp a ->
        let gamma, phase, gated, perHead = decayArguments a.Decay
        b.Attention(a.Heads, a.Key, a.Value, outFeatures = Option.toNullable a.Out, causal = a.Causal, kernel = a.Kernel,
                    featureMap = a.FeatureMap, decay = gamma, decayPhase = phase, inputDependentDecay = gated, headDecays = perHead)
    | Act k -> b.Activation(k)
    | ResidualProjection -> b.Residual(fun r -> r.RmsNorm().Projection(w))
    | ConcatOf(x, y) -> b.Concat((fun (l: SequenceBuilder) -> l.Projection(x)), (fun (r: SequenceBuilder) -> r.Projection(y)))
    | SliceOf(s, l) -> b.Slice(s, l)
    | LayerNormOp -> b.LayerNorm()
    | RmsNormOp -> b.RmsNorm()
    | ScaleOp f -> b.Scale(f)
    | ConvolutionOp k -> b.CausalConv1d(k)
    | ChannelScaleOp -> b.ChannelScale(-2.0, 2.0)
    | GroupNormOp(groups, centre) -> b.GroupNorm(groups, centre = centre)
    | GatedAttentionOf g ->
        let logDecay width = Func<SequenceBuilder, SequenceBuilder>(fun d -> d.Projection(width).Softplus().Scale(-1.0))
        let decay, gammas =
            match g.GDecay with
            | Undecayed -> null, null
            | DecayPerHead -> logDecay g.GHeads, null
            | DecayPerKeyChannel -> logDecay (g.GHeads * g.GKey), null
            | FixedAndPerHead gammas -> logDecay g.GHeads, Array.ofList gammas
        b.GatedLinearAttention(g.GHeads, g.GKey, g.GValue, (fun q -> q.Projection(g.GHeads * g.GKey)), (fun k -> k.Projection(g.GHeads * g.GKey)),
                               (fun v -> v.Projection(g.GHeads * g.GValue)), decay,
                               (if g.InputGate then Func<SequenceBuilder, SequenceBuilder>(fun i -> i.Projection(g.GHeads).Tanh().Scale(4.0)) else null),
                               g.Normalised, gammas)
    | RotaryOp(heads, angles) -> b.Rotary(heads, angles |> Option.map Array.ofList |> Option.toObj)
    | NormalisedReadoutOf heads -> b.NormalisedReadout(heads, fun n -> n.Projection(heads))
    | MarkOutput -> b.Output()

/// The graph an architecture describes, built with the C# builders (no weights).
let build (a: Architecture) : Graph =
    let start =
        match a.Second with
        | None -> Model.Input("x", a.Input)
        | Some k -> Model.Input("x", a.Input).Input("context", k).ConcatWith("x")
    (List.fold apply start a.Ops).Output().Build()

/// A graph with seeded weights (norm gains and biases random too) and inputs to run it on.
type Case =
    { Architecture: Architecture; Seed: int; Batch: int; Time: int }
    /// The architecture's graph with weights seeded from `Seed` (WeightInit.Perturbed).
    member c.Graph = InitializeWeights.Run(build c.Architecture, c.Seed, WeightInit.Perturbed)
    /// Inputs [Batch, Time, features] in [-1.5, 1.5], one per graph input, seeded from `Seed`.
    member c.Inputs =
        let random = Random(c.Seed)
        c.Graph.InputNodes |> Seq.map (fun i -> Sequences.randomSequence random c.Batch c.Time i.Features 1.5) |> Array.ofSeq
    /// The architecture, the seed and sizes, then the graph.
    override c.ToString() = sprintf "%A\nseed %d, batch %d, time %d\n%O" c.Architecture c.Seed c.Batch c.Time c.Graph

/// Cases: an architecture, a seed, a batch of 1 to 3 and 1 to 2 + min(14, size/4) steps.
let case : Gen<Case> =
    gen {
        let! a = architecture
        let! seed = Gen.choose (0, 1_000_000)
        let! batch = Gen.choose (1, 3)
        let! time = Gen.sized (fun s -> Gen.choose (1, 2 + min 14 (s / 4)))
        return { Architecture = a; Seed = seed; Batch = batch; Time = time }
    }

/// Arbitrary cases (no shrinking).
let arbCase = Arb.fromGen case

/// Arbitrary architectures (no shrinking).
let arbArchitecture = Arb.fromGen architecture

/// The node kinds the generator can produce, checked against NodeKinds.All by the coverage law.
let kindsOf (g: Graph) = g.Nodes |> Seq.map (fun n -> n.GetType().Name) |> Set.ofSeq

/// A random attention layer with weights at a random scale, and inputs to run it on.
type AttentionLayer =
    { Width: int; Heads: int; Key: int; Value: int; Out: int option; Decay: AttentionDecay
      FeatureMap: ActivationKind; WeightScale: float; Seed: int; Batch: int; Time: int }

let private scaleTensor (s: float) (t: DoubleTensor) =
    if isNull (box t) then t else DoubleTensor.FromShape(Array.ofSeq t.Shape, t.Data |> Seq.map ((*) s) |> Array.ofSeq)

/// One causal attention node, "attention", with seeded weights whose query, key, value and output matrices are
/// multiplied by `WeightScale`.
let attentionGraph (l: AttentionLayer) =
    let gamma, phase, gated, perHead = decayArguments l.Decay
    let g =
        Model.Input("x", l.Width)
            .Attention(l.Heads, l.Key, l.Value, outFeatures = Option.toNullable l.Out, featureMap = l.FeatureMap,
                       decay = gamma, decayPhase = phase, inputDependentDecay = gated, name = "attention", headDecays = perHead)
            .Build()
    let seeded = InitializeWeights.Run(g, l.Seed)
    seeded.MapNodes(function
        | :? Attention as a ->
            let w = a.Weights
            let s = l.WeightScale
            Attention(a.Name, a.Source, a.InFeatures, a.Heads, a.KeyWidth, a.ValueWidth, a.Causal, a.Kernel, a.FeatureMap,
                      a.Decay, a.OutFeatures,
                      AttentionWeights(scaleTensor s w.Query, scaleTensor s w.Key, scaleTensor s w.Value,
                                       (if isNull (box w.Output) then null else scaleTensor s w.Output),
                                       w.DecayWeight, w.DecayBias),
                      a.DecayPhase, a.InputDependentDecay) :> Node
        | n -> n)

/// Attention layers: width 1 to 16, 1 to 4 heads, key and value widths 1 to 8, any decay, weight scales 0.1 to 10,
/// up to 64 steps.
let attentionLayer : Gen<AttentionLayer> =
    gen {
        let! width = Gen.choose (1, 16)
        let! heads = Gen.choose (1, 4)
        let! key = Gen.choose (1, 8)
        let! value = Gen.choose (1, 8)
        let! out = Gen.oneof [ Gen.constant None; Gen.map Some (Gen.choose (1, 16)) ]
        let gamma = Gen.map (fun i -> float i / 100.0) (Gen.choose (50, 100))
        let! decay =
            Gen.frequency
                [ 2, Gen.constant AttentionDecay.NoDecay
                  1, Gen.map AttentionDecay.Gamma gamma
                  1, Gen.map2 (fun g p -> AttentionDecay.Rotating(g, float p / 10.0)) gamma (Gen.choose (-31, 31))
                  1, Gen.constant AttentionDecay.Gated
                  1, Gen.map AttentionDecay.PerHead (Gen.listOfLength heads gamma) ]
        let! featureMap = Gen.frequency [ 3, Gen.constant ActivationKind.Identity; 1, Gen.constant ActivationKind.EluPlusOne ]
        let! scale = Gen.map (fun k -> 10.0 ** (float k / 4.0)) (Gen.choose (-4, 4))
        let! seed = Gen.choose (0, 1_000_000)
        let! batch = Gen.choose (1, 4)
        let! time = Gen.sized (fun s -> Gen.choose (1, max 1 (min 64 (s + 1))))
        return { Width = width; Heads = heads; Key = key; Value = value; Out = out; Decay = decay; FeatureMap = featureMap
                 WeightScale = scale; Seed = seed; Batch = batch; Time = time }
    }

/// Arbitrary attention layers (no shrinking).
let arbLayer = Arb.fromGen attentionLayer

