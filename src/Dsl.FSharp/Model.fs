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
    | InputNode of Input
    | ProjectionNode of Projection
    | GateNode of Gate
    | RecurrenceNode of LinearRecurrence
    | AttentionNode of Attention
    | ActivationNode of Activation
    | AddNode of Add
    | ConcatNode of Concat
    | SliceNode of Slice
    | LayerNormNode of LayerNorm
    | RmsNormNode of RmsNorm
    | ScaleNode of Scale
    | CausalConv1dNode of CausalConv1d
    | ChannelScaleNode of ChannelScale
    | GroupNormNode of GroupNorm

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
    let nodes (g: Graph) = List.ofSeq g.Nodes
    let kinds (g: Graph) = g.Nodes |> Seq.map (fun (Kind k) -> k) |> List.ofSeq
    let summary (g: Graph) = g.Summary()

    /// What the shape rules warned about when the graph was built (e.g. a recurrence with |lambda| > 1); never errors.
    let warnings (g: Graph) = List.ofSeq g.Warnings

    let parameterCount (g: Graph) = ParameterCounts.Total g

    /// Seeded weights for every node without them.
    let withWeights seed (g: Graph) = InitializeWeights.Run(g, seed)

    /// A TorchSharp module: float32 on CPU, seed 0.
    let compile (g: Graph) = g.Compile()

    /// A TorchSharp module in float64.
    let compile64 (g: Graph) = g.Compile(CompileOptions.Float64)

    let compileWith (options: CompileOptions) (g: Graph) = g.Compile(options)

    /// Every causal linear attention lowered to the gated RNN that computes it (smallest construction).
    let lower (g: Graph) = (LowerAttention.Run g).Graph

    let lowerWith construction (g: Graph) = LowerAttention.Run(g, construction)

    /// Ok with a pure gated RNN, or Error with why some attention has no exact recurrent form.
    let tryLower (g: Graph) : Result<Graph, Diagnostic list> =
        let lowering = LowerAttention.Run g
        if lowering.Refused.Count = 0 then Ok lowering.Graph else Error(List.ofSeq lowering.Refused)

    /// Gated-RNN layers of the paper's form read back as attention.
    let raise (g: Graph) = (RaiseAttention.Run g).Graph

    /// Compares two graphs on random inputs (float64, default options).
    let equivalence (a: Graph) (b: Graph) = Equivalence.Check(a, b)

    let equivalenceWith options (a: Graph) (b: Graph) = Equivalence.Check(a, b, options)

/// Running compiled modules.
[<RequireQualifiedAccess>]
module Compiled =
    /// x: [batch, time, features] -> [batch, time, features'].
    let run (x: torch.Tensor) (m: CompiledGraph) = m.forward x

    let stepForm (m: CompiledGraph) = m.ToStepForm()

    /// The allocation-free float32 streamer over the current weights: Step(ReadOnlySpan) per token.
    let streamer batch (m: CompiledGraph) = m.ToStreamer<float32>(batch)

    /// The float64 streamer.
    let streamer64 batch (m: CompiledGraph) = m.ToStreamer<float>(batch)

    let parameterCount (m: CompiledGraph) = m.ParameterCount

    /// The groups of nodes the module runs as one kernel, each with the passes that ran it fused and node by node.
    let fusedGroups (m: CompiledGraph) = List.ofSeq m.FusedGroups

    /// The graph with the module's current weights.
    let toGraph (m: CompiledGraph) = m.ToGraph()
