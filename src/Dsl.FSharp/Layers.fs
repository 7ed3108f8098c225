namespace Duality.FSharp

open System
open Duality.Ir
open Duality.Builders

/// A model under construction, positioned at its current sequence [batch, time, features].
type Sequence = SequenceBuilder

/// A piece of architecture: from the sequence it starts at to the sequence it ends at.
type Layers = Sequence -> Sequence

/// How a recurrence's eigenvalues are given.
type Lambda =
    /// Real, trainable, seeded.
    | Trainable
    /// Real and fixed, one per neuron.
    | Fixed of float[]
    /// Complex (re, im) pairs, trainable and seeded when none are given; emits the real part or [re; im].
    | Complex of ComplexReadout * fixedValues: (float * float)[] option
    /// lambda_t = sigmoid(decay x_t), from a branch one or width features wide.
    | InputDependent of decay: Layers
    /// lambda_t = e^(decay x_t): the branch gives log lambda_t (Mamba-2, RG-LRU), one or width features wide.
    | LogDecay of decay: Layers

/// Position weighting of a linear attention.
type Decay =
    /// w(t, s) = 1: every earlier step weighs the same.
    | NoDecay
    /// gamma^(t-s)
    | Gamma of float
    /// gamma^(t-s) cos(theta (t-s)): a complex decay gamma e^(i theta)
    | Rotating of gamma: float * theta: float
    /// prod sigmoid(w_h . x + b_h): gated linear attention
    | Gated
    /// gamma_h^(t-s), one gamma per head: multi-scale decays (RetNet: gamma_h = 1 - 2^(-5-h))
    | PerHead of float list

/// A projection with every option of the C# builder; start from `Projections.create`.
type ProjectionSpec =
    { Out: int; Bias: bool; In: int option; Weights: ProjectionWeights option; Name: string option }

/// Creating `ProjectionSpec` values.
[<RequireQualifiedAccess>]
module Projections =
    /// y = W x + b, sizes inferred, seeded weights.
    let create outFeatures = { Out = outFeatures; Bias = true; In = None; Weights = None; Name = None }

/// A layer or RMS norm with every option of the C# builder; `Epsilon = None` keeps the kind's default.
type NormSpec = { Epsilon: float option; Affine: bool; Weights: NormWeights option; Name: string option }

/// Creating `NormSpec` values.
[<RequireQualifiedAccess>]
module Norms =
    /// Affine, the kind's epsilon (1e-5 layer norm, 1e-6 RMS norm), seeded weights, the default name.
    let defaults = { Epsilon = None; Affine = true; Weights = None; Name = None }

/// A recurrence with every option of the C# builder, field by field: `Lambda` values [width] real or
/// [width, 2] complex (required when not trainable), `Decay` a branch making lambda input-dependent (`DecayForm`
/// how), `ComplexInput` a complex state reading [re; im] inputs, `NormalisedInput` the input scaled by sqrt(1 - |lambda|^2).
type RecurrenceSpec =
    { Width: int option; Trainable: bool; Lambda: DoubleTensor option; State: StateKind; Readout: ComplexReadout
      InitialState: DoubleTensor option; Decay: Layers option; DecayForm: DecayForm; ComplexInput: bool; NormalisedInput: bool
      Name: string option }

/// Creating `RecurrenceSpec` values.
[<RequireQualifiedAccess>]
module Recurrences =
    /// A real, trainable, seeded recurrence over the current width.
    let create = { Width = None; Trainable = true; Lambda = None; State = StateKind.Real; Readout = ComplexReadout.RealPart
                   InitialState = None; Decay = None; DecayForm = DecayForm.Sigmoid; ComplexInput = false
                   NormalisedInput = false; Name = None }

/// An attention layer's hyper-parameters, and optionally its weights (layout: `AttentionWeights`, README);
/// start from `Attention.linear` or `Attention.softmax`.
type AttentionSpec =
    { Heads: int; KeyWidth: int; ValueWidth: int; Out: int option; Causal: bool
      Kernel: AttentionKernel; FeatureMap: ActivationKind; Decay: Decay; Name: string option
      Weights: AttentionWeights option }

/// Creating `AttentionSpec` values.
[<RequireQualifiedAccess>]
module Attention =
    /// Causal linear attention (no softmax, no normalisation).
    let linear heads keyWidth valueWidth =
        { Heads = heads; KeyWidth = keyWidth; ValueWidth = valueWidth; Out = None; Causal = true
          Kernel = AttentionKernel.Linear; FeatureMap = ActivationKind.Identity; Decay = NoDecay; Name = None
          Weights = None }

    /// Causal softmax attention.
    let softmax heads keyWidth valueWidth = { linear heads keyWidth valueWidth with Kernel = AttentionKernel.Softmax }

/// A gated linear attention's branches (each starts at the current sequence) and options; start from
/// `GatedAttention.create`. LogDecay gives l per head ([Heads]) or per key channel ([Heads*KeyWidth]), LogInputGate g per head.
type GatedAttentionSpec =
    { Heads: int; KeyWidth: int; ValueWidth: int; Query: Layers; Key: Layers; Value: Layers
      LogDecay: Layers option; LogInputGate: Layers option; Normalised: bool; HeadDecays: float list option; Name: string option }

/// Creating `GatedAttentionSpec` values.
[<RequireQualifiedAccess>]
module GatedAttention =
    /// Plain causal linear attention over the query, key and value branches (no decay, no gate, not normalised).
    let create heads keyWidth valueWidth (query: Layers) (key: Layers) (value: Layers) =
        { Heads = heads; KeyWidth = keyWidth; ValueWidth = valueWidth; Query = query; Key = key; Value = value
          LogDecay = None; LogInputGate = None; Normalised = false; HeadDecays = None; Name = None }

/// Data-last layer functions: `Model.input "x" 8 |> Layer.projection 32 |> Layer.rmsNorm`.
[<RequireQualifiedAccess>]
module Layer =
    let private name (n: string option) = Option.toObj n

    /// y = W x + b at every step.
    let projection outFeatures : Layers = fun s -> s.Projection(outFeatures)

    /// y = W x at every step.
    let projectionNoBias outFeatures : Layers = fun s -> s.Projection(outFeatures, bias = false)

    /// A projection with every option: `Layer.projectionWith { Projections.create 8 with Weights = Some w }`.
    let projectionWith (spec: ProjectionSpec) : Layers =
        fun s -> s.Projection(spec.Out, spec.Bias, name spec.Name, Option.toObj spec.Weights, Option.toNullable spec.In)

    /// value x * activation (gate x); both branches start at the current sequence.
    let gate (value: Layers) (gate: Layers) (activation: ActivationKind) : Layers = fun s -> s.Gate(value, gate, activation)

    /// x * activation (gate x).
    let gateBy (gate: Layers) (activation: ActivationKind) : Layers = fun s -> s.Gate(gate, activation)

    /// A gate named `gateName`, its branches named under "gateName/value/" and "gateName/gate/".
    let gateNamed gateName (value: Layers) (gate: Layers) (activation: ActivationKind) : Layers =
        fun s -> s.Gate(value, gate, activation, gateName)

    /// x * activation (gate x), named `gateName`, the branch under "gateName/gate/".
    let gateByNamed gateName (gate: Layers) (activation: ActivationKind) : Layers = fun s -> s.Gate(gate, activation, gateName)

    /// h_t = lambda * h_{t-1} + u_t over the current width.
    let recurrence (lambda: Lambda) : Layers =
        fun s ->
            match lambda with
            | Trainable -> s.LinearRecurrence()
            | Fixed values -> s.LinearRecurrence(values)
            | Complex(readout, None) -> s.LinearRecurrence(state = StateKind.Complex, readout = readout)
            | Complex(readout, Some pairs) ->
                let values = pairs |> Array.collect (fun (re, im) -> [| re; im |])
                s.LinearRecurrence(trainable = false, state = StateKind.Complex, readout = readout,
                                   lambda = DoubleTensor.FromShape([| pairs.Length; 2 |], values))
            | InputDependent decay -> s.LinearRecurrence(decay = decay)
            | LogDecay decay -> s.LinearRecurrence(decay = decay, decayForm = DecayForm.Logarithm)

    /// A recurrence starting from a given state: [width] values, or [width] (re, im) pairs flattened for a complex state.
    let recurrenceFrom (initialState: float[]) (lambda: Lambda) : Layers =
        fun s ->
            let width = s.Width.GetValueOrDefault()
            let state shape = DoubleTensor.FromShape(shape, initialState)
            match lambda with
            | Trainable -> s.LinearRecurrence(initialState = state [| width |])
            | Fixed values -> s.LinearRecurrence(values.Length, trainable = false, lambda = DoubleTensor.Vector values, initialState = state [| values.Length |])
            | Complex(readout, None) ->
                s.LinearRecurrence(state = StateKind.Complex, readout = readout, initialState = state [| width; 2 |])
            | Complex(readout, Some pairs) ->
                let values = pairs |> Array.collect (fun (re, im) -> [| re; im |])
                s.LinearRecurrence(trainable = false, state = StateKind.Complex, readout = readout,
                                   lambda = DoubleTensor.FromShape([| pairs.Length; 2 |], values), initialState = state [| pairs.Length; 2 |])
            | InputDependent decay -> s.LinearRecurrence(decay = decay, initialState = state [| width |])
            | LogDecay decay -> s.LinearRecurrence(decay = decay, initialState = state [| width |], decayForm = DecayForm.Logarithm)

    /// A recurrence with every option of the C# builder (see `RecurrenceSpec`).
    let recurrenceWith (spec: RecurrenceSpec) : Layers =
        fun s ->
            s.LinearRecurrence(Option.toNullable spec.Width, spec.Trainable, Option.toObj spec.Lambda, spec.State, spec.Readout,
                               Option.toObj spec.InitialState, Option.toObj (spec.Decay |> Option.map (fun f -> Func<_, _> f)),
                               name spec.Name, spec.DecayForm, spec.ComplexInput, spec.NormalisedInput)

    /// Self-attention: hyper-parameters, name and (optionally) weights from the spec.
    let attention (spec: AttentionSpec) : Layers =
        fun s ->
            let gamma, theta =
                match spec.Decay with
                | Gamma g -> Nullable g, Nullable()
                | Rotating(g, t) -> Nullable g, Nullable t
                | NoDecay | Gated | PerHead _ -> Nullable(), Nullable()
            let headDecays = match spec.Decay with PerHead gammas -> Array.ofList gammas | _ -> null
            s.Attention(spec.Heads, spec.KeyWidth, spec.ValueWidth, outFeatures = Option.toNullable spec.Out,
                        causal = spec.Causal, kernel = spec.Kernel, featureMap = spec.FeatureMap, decay = gamma,
                        decayPhase = theta, inputDependentDecay = (spec.Decay = Gated), name = name spec.Name,
                        weights = Option.toObj spec.Weights, headDecays = headDecays)

    /// Causal gated linear attention over the spec's branches: S_t = diag(gamma_h e^(l_t)) S_{t-1} + e^(g_t) k_t v_t^T,
    /// y_t = S_t^T q_t (divided by max(|n_t . q_t|, 1) when normalised).
    let gatedLinearAttention (spec: GatedAttentionSpec) : Layers =
        fun s ->
            let branch (l: Layers option) = l |> Option.map (fun f -> Func<_, _> f) |> Option.toObj
            s.GatedLinearAttention(spec.Heads, spec.KeyWidth, spec.ValueWidth, Func<_, _> spec.Query, Func<_, _> spec.Key, Func<_, _> spec.Value,
                                   branch spec.LogDecay, branch spec.LogInputGate, spec.Normalised,
                                   spec.HeadDecays |> Option.map Array.ofList |> Option.toObj, name spec.Name)

    /// The current sequence (heads*d_v values) divided per head by max(|n|, 1), n the `normaliser` branch of `heads` features.
    let normalisedReadout heads (normaliser: Layers) : Layers = fun s -> s.NormalisedReadout(heads, normaliser)

    /// `normalisedReadout` named `readoutName`, its normaliser branch named under "readoutName/normaliser/".
    let normalisedReadoutNamed readoutName heads (normaliser: Layers) : Layers = fun s -> s.NormalisedReadout(heads, normaliser, readoutName)

    /// y = f(x) elementwise, f given by `kind`.
    let activation kind : Layers = fun s -> s.Activation(kind)
    /// y = 1 / (1 + e^-x) elementwise.
    let sigmoid : Layers = activation ActivationKind.Sigmoid
    /// y = x sigmoid(x) elementwise.
    let silu : Layers = activation ActivationKind.SiLU
    /// y = x Phi(x) elementwise (the exact GELU).
    let gelu : Layers = activation ActivationKind.GELU
    /// y = tanh(x) elementwise.
    let tanh : Layers = activation ActivationKind.Tanh
    /// y = max(0, x) elementwise.
    let relu : Layers = activation ActivationKind.ReLU
    /// log(1 + e^x), elementwise.
    let softplus : Layers = activation ActivationKind.Softplus
    /// log sigmoid(x) = -softplus(-x), elementwise: a log-decay in (-inf, 0).
    let logSigmoid : Layers = activation ActivationKind.LogSigmoid
    /// log softplus(x) = log log(1 + e^x), elementwise: a log step size, finite for every real x.
    let logSoftplus : Layers = activation ActivationKind.LogSoftplus
    /// e^x, elementwise (a gate given by its logarithm).
    let exp : Layers = activation ActivationKind.Exp

    /// x + body x; the block's nodes are named under "residual/" (see `residualNamed`).
    let residual (body: Layers) : Layers = fun s -> s.Residual(body)

    /// x + body x; the sum takes the name, the block's nodes are named under "name/".
    let residualNamed name (body: Layers) : Layers = fun s -> s.Residual(body, name)

    /// current + the node called `other`.
    let add other : Layers = fun s -> s.Add(other: string)

    /// current + branch current; the branch's nodes are named under "add/" (see `addBranchNamed`).
    let addBranch (branch: Layers) : Layers = fun s -> s.Add(Func<_, _> branch)

    /// current + branch current, the sum named `addName`, the branch's nodes under "addName/".
    let addBranchNamed addName (branch: Layers) : Layers = fun s -> s.Add(Func<_, _> branch, addName)

    /// [branch1 x; branch2 x; ...] along features.
    let concat (branches: Layers list) : Layers = fun s -> s.Concat(branches |> List.map (fun f -> Func<_, _> f) |> Array.ofList)

    /// [branch1 x; branch2 x; ...], named `concatName`, branch i's nodes under "concatName/i/".
    let concatNamed concatName (branches: Layers list) : Layers =
        fun s -> s.Concat(concatName, branches |> List.map (fun f -> Func<_, _> f) |> Array.ofList)

    /// y = x[..., start : start + length] on the feature axis.
    let slice start length : Layers = fun s -> s.Slice(start, length)
    /// y = (x - mean) / sqrt(var + 1e-5) * g + b over the features, g and b trainable.
    let layerNorm : Layers = fun s -> s.LayerNorm()
    /// y = x / sqrt(mean(x^2) + 1e-6) * g over the features, g trainable.
    let rmsNorm : Layers = fun s -> s.RmsNorm()

    /// A layer norm with every option: `Layer.layerNormWith { Norms.defaults with Affine = false }`.
    let layerNormWith (spec: NormSpec) : Layers =
        fun s ->
            match spec.Epsilon with
            | Some epsilon -> s.LayerNorm(epsilon, spec.Affine, name spec.Name, Option.toObj spec.Weights)
            | None -> s.LayerNorm(affine = spec.Affine, name = name spec.Name, weights = Option.toObj spec.Weights)

    /// An RMS norm with every option: `Layer.rmsNormWith { Norms.defaults with Epsilon = Some 1e-8 }`.
    let rmsNormWith (spec: NormSpec) : Layers =
        fun s ->
            match spec.Epsilon with
            | Some epsilon -> s.RmsNorm(epsilon, spec.Affine, name spec.Name, Option.toObj spec.Weights)
            | None -> s.RmsNorm(affine = spec.Affine, name = name spec.Name, weights = Option.toObj spec.Weights)
    /// y = factor * x.
    let scale factor : Layers = fun s -> s.Scale(factor)

    /// y_t = b + sum_{i < k} w_i * x_{t-i} per channel: a causal depthwise convolution of `kernelSize` taps.
    let causalConv1d kernelSize : Layers = fun s -> s.CausalConv1d(kernelSize)

    /// A causal convolution with every option: bias, name and (optionally) weights.
    let causalConv1dWith kernelSize bias (convName: string option) (weights: ConvolutionWeights option) : Layers =
        fun s -> s.CausalConv1d(kernelSize, bias, name convName, Option.toObj weights)

    /// Rotary position embedding: `heads` blocks of d features, pair (2j, 2j+1) of each rotated by t theta_j at step t,
    /// theta_j = 10000^(-2j/d).
    let rotary heads : Layers = fun s -> s.Rotary(heads)

    /// A rotary embedding with every option: the angles theta_j ([d/2], radians per step) and the name.
    let rotaryWith heads (angles: float[] option) (rotaryName: string option) : Layers =
        fun s -> s.Rotary(heads, Option.toObj angles, name rotaryName)

    /// Normalises each of `groups` consecutive groups of features (one per head), then a gain and bias per feature.
    let groupNorm groups : Layers = fun s -> s.GroupNorm(groups)

    /// A group norm with every option: epsilon, affine, centred (GroupNorm) or not (RMS per group), name and weights.
    let groupNormWith groups epsilon affine centre (normName: string option) (weights: NormWeights option) : Layers =
        fun s -> s.GroupNorm(groups, epsilon, affine, centre, name normName, Option.toObj weights)

    /// y_t[c] = s[c] x_t[c]: a learned factor per channel, initially 1.
    let channelScale : Layers = fun s -> s.ChannelScale()

    /// A channel scale with every option: the factors' initial range, name and (optionally) the factors.
    let channelScaleWith initialLow initialHigh (scaleName: string option) (factors: DoubleTensor option) : Layers =
        fun s -> s.ChannelScale(initialLow, initialHigh, name scaleName, Option.toObj factors)

    /// Names the nodes built by `body` under "name/".
    let scope name (body: Layers) : Layers = fun s -> s.Scope(name, body)

    /// Renames the node just built: `Layer.projection 8 >> Layer.named "embed"`.
    let named name : Layers = fun s -> s.Named(name)

    /// Marks the current sequence as a graph output.
    let output : Layers = fun s -> s.Output()

    /// Continues from the node called `name`.
    let from name : Layers = fun s -> s.From(name)

    /// Adds another input and continues from it.
    let input name features : Layers = fun s -> s.Input(name, features)

    /// Concatenates the current sequence with the nodes called `others`.
    let concatWith (others: string list) : Layers = fun s -> s.ConcatWith(Array.ofList others)
