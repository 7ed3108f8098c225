namespace Duality.FSharp

open Duality.Ir

/// Layers written one per line, applied in order: `layers { Layer.rmsNorm; Layer.projection 64 }`.
type LayersBuilder(finish: Layers -> Layers) =
    member _.Yield(layer: Layers) : Layers = layer
    member _.Zero() : Layers = id
    member _.Combine(first: Layers, rest: Layers) : Layers = first >> rest
    member _.Delay(f: unit -> Layers) : Layers = f ()
    member _.Run(layer: Layers) : Layers = finish layer

/// The branches and activation of a gate: `gated { value (...); gate (...); activation ActivationKind.SiLU }`.
type GateSpec = { Value: Layers; Gate: Layers; Activation: ActivationKind }

type GateBuilder() =
    member _.Yield(()) = { Value = id; Gate = id; Activation = ActivationKind.Identity }
    [<CustomOperation("value")>]
    member _.Value(spec: GateSpec, branch: Layers) = { spec with Value = branch }
    [<CustomOperation("gate")>]
    member _.Gate(spec: GateSpec, branch: Layers) = { spec with Gate = branch }
    [<CustomOperation("activation")>]
    member _.Activation(spec: GateSpec, kind: ActivationKind) = { spec with Activation = kind }
    member _.Run(spec: GateSpec) : Layers = Layer.gate spec.Value spec.Gate spec.Activation

[<AutoOpen>]
module Builders =
    /// A sequence of layers.
    let layers = LayersBuilder id

    /// A sequence of layers whose nodes are named under "name/".
    let block name = LayersBuilder(Layer.scope name)

    /// x + (the layers)(x), named `name`; its nodes under "name/".
    let residual name = LayersBuilder(Layer.residualNamed name)

    /// value x * activation (gate x).
    let gated = GateBuilder()
