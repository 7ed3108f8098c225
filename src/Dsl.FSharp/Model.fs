namespace Duality.FSharp

open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Torch
open Duality.Verification
open TorchSharp

/// Every node kind, for exhaustive matches: `match node with Kind (ProjectionNode p) -> ...`.
type NodeKind =
    /// A named graph input.
    | InputNode of Input
    /// y_t = W x_t + b.
    | ProjectionNode of Projection
    /// value * activation(gate).
    | GateNode of Gate
    /// h_t = lambda * h_{t-1} + u_t, diagonal.
    | RecurrenceNode of LinearRecurrence
    /// Multi-head self-attention, linear or softmax.
    | AttentionNode of Attention
    /// An elementwise nonlinearity.
    | ActivationNode of Activation
    /// a + b.
    | AddNode of Add
    /// [a; b; ...] along features.
    | ConcatNode of Concat
    /// A range of features.
    | SliceNode of Slice
    /// Layer normalisation over the features.
    | LayerNormNode of LayerNorm
    /// RMS normalisation over the features.
    | RmsNormNode of RmsNorm
    /// A constant factor.
    | ScaleNode of Scale
    /// A causal depthwise convolution over time.
    | CausalConv1dNode of CausalConv1d
    /// A learned factor per channel.
    | ChannelScaleNode of ChannelScale
    /// Normalisation within groups of channels.
    | GroupNormNode of GroupNorm
    /// Causal gated linear attention over query, key and value branches.
    | GatedLinearAttentionNode of GatedLinearAttention
    /// Each head's feature pairs rotated by t theta_j at step t (RoPE).
    | RotaryNode of Rotary
    /// Values divided per head by max(|normaliser|, 1).
    | NormalisedReadoutNode of NormalisedReadout

/// The `Kind` pattern, opened with `Duality.FSharp`.
[<AutoOpen>]
module NodePatterns =
    /// The node as a case of `NodeKind`.
    let (|Kind|) (node: Node) =
        match node with
        | :? Input as n -> InputNode n
        | :? Projection as n -> ProjectionNode n
        | :? Gate as n -> GateNode n
        | :? LinearRecurrence as n -> RecurrenceNode n
        | :? Attention as n -> AttentionNode n
        | :? Activation as n -> ActivationNode n
        | :? Add as n -> AddNode n
        | :? Concat as n -> ConcatNode n
        | :? Slice as n -> SliceNode n
        | :? LayerNorm as n -> LayerNormNode n
        | :? RmsNorm as n -> RmsNormNode n
        | :? Scale as n -> ScaleNode n
        | :? CausalConv1d as n -> CausalConv1dNode n
        | :? ChannelScale as n -> ChannelScaleNode n
        | :? GroupNorm as n -> GroupNormNode n
        | :? GatedLinearAttention as n -> GatedLinearAttentionNode n
        | :? Rotary as n -> RotaryNode n
        | :? NormalisedReadout as n -> NormalisedReadoutNode n
        | other -> invalidArg "node" (sprintf "unknown node kind %s" (other.GetType().Name))

/// Starting, finishing and inspecting models.
[<RequireQualifiedAccess>]
module Model =
    /// A model starting at a named input [batch, time, features].
    let input name features : Sequence = Model.Input(name, features)

    /// The verified graph, or every problem found. Warnings do not stop a build: read them with `Graph.warnings`.
    let tryBuild (s: Sequence) : Result<Graph, Diagnostic list> =
        try Ok(s.Build()) with :? GraphException as e -> Error(List.ofSeq e.Diagnostics)

    /// The verified graph; throws a GraphException listing every problem.
    let build (s: Sequence) : Graph = s.Build()

/// Functions over verified graphs.
[<RequireQualifiedAccess>]
module Graph =
    /// The graph with the weight slot `slot` of the node named `node` set to `value` (layouts: the node's WeightSlots).
    let withWeight (node: string) (slot: string) (value: DoubleTensor) (g: Graph) = g.WithWeight(node, slot, value)

    /// The graph with several weight slots of the node named `node` set at once.
    let withWeightValues (node: string) (values: (string * DoubleTensor) list) (g: Graph) =
        g.WithWeights(node, dict values |> System.Collections.Generic.Dictionary)

    /// The nodes in construction order (a node reads only earlier ones).
    let nodes (g: Graph) = List.ofSeq g.Nodes
    /// The nodes as `NodeKind` cases, in construction order.
    let kinds (g: Graph) = g.Nodes |> Seq.map (fun (Kind k) -> k) |> List.ofSeq
    /// A table of nodes, kinds, output shapes and parameter counts, with totals, then the warnings.
    let summary (g: Graph) = g.Summary()

    /// What the shape rules warned about when the graph was built (e.g. a recurrence with |lambda| > 1); never errors.
    let warnings (g: Graph) = List.ofSeq g.Warnings

    /// Trainable scalars, from the hyper-parameters alone.
    let parameterCount (g: Graph) = ParameterCounts.Total g

    /// Seeded weights for every node without them.
    let withWeights seed (g: Graph) = InitializeWeights.Run(g, seed)

    /// A TorchSharp module: float32 on CPU, seed 0.
    let compile (g: Graph) = g.Compile()

    /// A TorchSharp module in float64.
    let compile64 (g: Graph) = g.Compile(CompileOptions.Float64)

    /// A TorchSharp module compiled with `options` (dtype, device, seed, execution mode).
    let compileWith (options: CompileOptions) (g: Graph) = g.Compile(options)

    /// Every causal linear attention lowered to the gated RNN that computes it (smallest construction).
    let lower (g: Graph) = (LowerAttention.Run g).Graph

    /// Lowers every causal linear attention with the given `Construction`: the new graph, a report per lowered
    /// attention, and why the others were left alone.
    let lowerWith construction (g: Graph) = LowerAttention.Run(g, construction)

    /// Ok with a pure gated RNN, or Error with why some attention has no exact recurrent form.
    let tryLower (g: Graph) : Result<Graph, Diagnostic list> =
        let lowering = LowerAttention.Run g
        if lowering.Refused.Count = 0 then Ok lowering.Graph else Error(List.ofSeq lowering.Refused)

    /// Gated-RNN layers of the paper's form read back as attention.
    let raise (g: Graph) = (RaiseAttention.Run g).Graph

    /// Compares two graphs on random inputs (float64, default options).
    let equivalence (a: Graph) (b: Graph) = Equivalence.Check(a, b)

    /// Compares two graphs on random (and given) inputs as `options` say; inputs by name, outputs by position.
    let equivalenceWith options (a: Graph) (b: Graph) = Equivalence.Check(a, b, options)

/// Running compiled modules.
[<RequireQualifiedAccess>]
module Compiled =
    /// x: [batch, time, features] -> [batch, time, features'].
    let run (x: torch.Tensor) (m: CompiledGraph) = m.forward x

    /// The module one step at a time on tensors (x_t: [batch, features]), sharing its parameters; throws a
    /// GraphException for a graph with non-causal attention.
    let stepForm (m: CompiledGraph) = m.ToStepForm()

    /// The allocation-free float32 streamer over the current weights: Step(ReadOnlySpan) per token.
    let streamer batch (m: CompiledGraph) = m.ToStreamer<float32>(batch)

    /// The float64 streamer.
    let streamer64 batch (m: CompiledGraph) = m.ToStreamer<float>(batch)

    /// Trainable scalars of the module.
    let parameterCount (m: CompiledGraph) = m.ParameterCount

    /// The groups of nodes the module runs as one kernel, each with the passes that ran it fused and node by node.
    let fusedGroups (m: CompiledGraph) = List.ofSeq m.FusedGroups

    /// The graph with the module's current weights.
    let toGraph (m: CompiledGraph) = m.ToGraph()
